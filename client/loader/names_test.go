//go:build linux

package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// TestPinPath: every pin path is a single validated file name under the
// set's directory.
func TestPinPath(t *testing.T) {
	dir := filepath.Join("/sys/fs/bpf/bpfarm", "set")
	if p, err := pinPath(dir, mapsDir, "_rodata"); err != nil || p != dir+"/maps/_rodata" {
		t.Fatalf("pinPath: %q %v", p, err)
	}
	if p, err := pinPath(dir, linksDir, "count@cpu3"); err != nil || p != dir+"/links/count@cpu3" {
		t.Fatalf("pinPath of a per-cpu link: %q %v", p, err)
	}
	for _, bad := range []string{"", ".", "..", "../../x", "a/b", "/etc/x", "x\x00"} {
		if p, err := pinPath(dir, progsDir, bad); err == nil {
			t.Errorf("pinPath(%q) = %q: want refused", bad, p)
		}
	}
}

// TestNamesAreData: an object whose program or map name (an asm label) is
// a path, loaded without going through a server, is refused with one line
// before anything is created: no pins inside or outside PIN-DIR/NAME/, no
// state, nothing loaded.
func TestNamesAreData(t *testing.T) {
	for _, c := range []struct{ obj, want string }{
		{"escape", `program name "../../escaped_prog" is not a C identifier`},
		{"escape_map", `map name "../../escaped_map" is not a C identifier`},
	} {
		t.Run(c.obj, func(t *testing.T) {
			a := artifactNoRelocation(t, c.obj)
			for _, mode := range []Mode{ModeHostBTF, ModeRelocated} {
				opt := testOptions(t)
				opt.PinDir = filepath.Join(pinRoot, "escape-"+string(mode))
				if err := os.MkdirAll(opt.PinDir, 0o700); err != nil {
					t.Fatal(err)
				}
				opt.Mode = mode
				a.Name = uniqueName(t)
				_, err := tryLoad(t, a, opt)
				if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("mode %s: %v; want one line with %q", mode, err, c.want)
				}
				for _, dir := range []string{opt.PinDir, pinRoot, filepath.Dir(pinRoot)} {
					for _, e := range dirNames(t, dir) {
						if strings.HasPrefix(e, "escaped") || e == a.Name {
							t.Errorf("mode %s: the refused load left %s in %s", mode, e, dir)
						}
					}
				}
				if _, err := os.Stat(stateFile(opt.StateDir, a.Name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("mode %s: the refused load left a state file: %v", mode, err)
				}
			}
		})
	}
}

// artifactNoRelocation is an artifact of testdata/NAME.bpf.c with its
// object as its relocated one too: the loader refuses it before it would
// relocate anything.
func artifactNoRelocation(t *testing.T, name string) *Artifact {
	t.Helper()
	requireRoot(t)
	obj := compile(t, name)
	return &Artifact{Revision: "r1-" + name, Object: obj, MinBTF: nil, Relocated: obj}
}

// TestFailedLoadLeavesNothing: a load that fails after one program was
// attached (the next needs an interface) undoes everything: no pins, no
// state, no link, no program left in the kernel.
func TestFailedLoadLeavesNothing(t *testing.T) {
	a := artifact(t, "halfattach")
	opt := testOptions(t)
	_, err := tryLoad(t, a, opt)
	if err == nil || !strings.Contains(err.Error(), "b_half_xdp") {
		t.Fatalf("Load without an interface: %v", err)
	}
	if _, err := os.Stat(setDir(opt.PinDir, a.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed load left its pin directory: %v", err)
	}
	if _, err := os.Stat(stateFile(opt.StateDir, a.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed load left a state file: %v", err)
	}
	// Programs are freed once their last reference (the tracepoint's
	// link) is gone; the kernel may do it asynchronously.
	if err := waitProgramsGone(&Loaded{Programs: halfPrograms(t)}); err != nil {
		t.Errorf("the failed load left programs loaded: %v", err)
	}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue
		}
		if p, err := ebpf.NewProgramFromID(info.Program); err == nil {
			if pi, err := p.Info(); err == nil && strings.HasPrefix(pi.Name, "a_half_tp") {
				t.Errorf("the failed load left link %d of a_half_tp", info.ID)
			}
			p.Close()
		}
	}
}

// halfPrograms lists the loaded programs named like halfattach's.
func halfPrograms(t *testing.T) []ProgramState {
	var out []ProgramState
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if pi, err := p.Info(); err == nil && (strings.HasPrefix(pi.Name, "a_half_tp") || strings.HasPrefix(pi.Name, "b_half_xdp")) {
			out = append(out, ProgramState{Name: pi.Name, ID: uint32(id)})
		}
		p.Close()
	}
}
