package core

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// testKernel is a kernel the equivalence tests run against, with its full
// BTF as files for bpftool.
type testKernel struct {
	k       *Kernel
	vmlinux []byte
	modules map[string][]byte
}

// fullSize is the size of the kernel's full BTF, modules included.
func (tk testKernel) fullSize() int {
	n := len(tk.vmlinux)
	for _, m := range tk.modules {
		n += len(m)
	}
	return n
}

// testKernels returns the host kernel, the host kernel without
// task_struct::sessionid, the host kernel with a conflicting second
// task_struct and, unless -short, real Debian kernels.
func testKernels(t *testing.T) []testKernel {
	f := setup(t)
	out := []testKernel{
		{f.host, f.hostBTF, nil},
		{f.modified, f.modBTF, nil},
		{f.ambiguous, f.ambBTF, nil},
	}
	return append(out, debianKernels(t)...)
}

// TestMinBTFEquivalent checks, for every object and every kernel, that
// relocating against the minimized BTF alone gives exactly the fixups the
// kernel's full BTF gives, for every program.
func TestMinBTFEquivalent(t *testing.T) {
	f := setup(t)
	for _, tk := range testKernels(t) {
		for _, name := range f.names() {
			t.Run(tk.k.ID+"/"+name, func(t *testing.T) {
				o := f.object(t, name)
				res := relocate(t, o, tk.k)
				min, err := btf.LoadSpecFromReader(bytes.NewReader(res.MinBTF))
				if err != nil {
					t.Fatalf("parse MinBTF: %v", err)
				}
				var full map[string][]Fixup
				err = tk.k.lookup(o.lookupNames, func(mods bool) (err error) {
					full, err = o.Fixups(tk.k.specs(mods)...)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				got, err := o.Fixups(min)
				if err != nil {
					t.Fatal(err)
				}
				for _, prog := range o.Programs() {
					if !slices.Equal(got[prog], full[prog]) {
						t.Errorf("%s:\nfull BTF: %v\nMinBTF:   %v", prog, full[prog], got[prog])
					}
				}
				// The report agrees with the fixups.
				for _, pr := range res.Report.Programs {
					var poisons int
					for _, fx := range full[pr.Name] {
						if fx.Poison {
							poisons++
						}
					}
					if poisons != len(pr.Poisoned) {
						t.Errorf("%s: %d poisoned fixups, report lists %v", pr.Name, poisons, pr.Poisoned)
					}
				}
			})
		}
	}
}

// TestMinBTFVersusBpftool compares MinBTF with bpftool gen min_core_btf on
// the same inputs: both must be tiny next to the kernel's BTF, and ours no
// bigger than bpftool's plus 10%. bpftool takes one BTF file: for kernels
// with modules it gets vmlinux (the examples use no module types).
func TestMinBTFVersusBpftool(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	for _, tk := range testKernels(t) {
		full := filepath.Join(dir, tk.k.ID+".btf")
		if err := os.WriteFile(full, tk.vmlinux, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, name := range f.names() {
			res := relocate(t, f.object(t, name), tk.k)
			out := filepath.Join(dir, tk.k.ID+"-"+name+".btf")
			if _, err := run(f.bpftool, "gen", "min_core_btf", full, out, f.paths[name]); err != nil {
				failed := slices.ContainsFunc(res.Report.Programs, func(pr ProgramReport) bool { return pr.Status == StatusFailed })
				if !failed {
					t.Errorf("%s: %v", name, err)
				} else {
					t.Logf("%-22s %-24s bpftool fails too: %v", tk.k.ID, name, err)
				}
				continue
			}
			theirs, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-22s %-24s full %8d  bpftool %6d  ours %6d (%.4f%% of full)",
				tk.k.ID, name, tk.fullSize(), len(theirs), len(res.MinBTF), 100*float64(len(res.MinBTF))/float64(tk.fullSize()))
			if len(res.MinBTF)*100 > tk.fullSize() {
				t.Errorf("%s: MinBTF is %d bytes, over 1%% of %d", name, len(res.MinBTF), tk.fullSize())
			}
			if len(res.MinBTF)*10 > len(theirs)*11 {
				t.Errorf("%s: MinBTF is %d bytes, bpftool's %d", name, len(res.MinBTF), len(theirs))
			}
			// bpftool can read ours.
			if _, err := run(f.bpftool, "btf", "dump", "file", writeTemp(t, dir, res.MinBTF)); err != nil {
				t.Errorf("%s: bpftool can't read MinBTF: %v", name, err)
			}
		}
	}
}

var tempN int

func writeTemp(t *testing.T, dir string, data []byte) string {
	t.Helper()
	tempN++
	p := filepath.Join(dir, fmt.Sprintf("tmp-%d", tempN))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
