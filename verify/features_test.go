package verify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/btf/core"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// agreementKernel is a kernel booted to check predictions against.
type agreementKernel struct {
	name string // for test names
	arch string
	load func(t *testing.T) *testKernel
}

var (
	arm64Once   sync.Once
	arm64Kernel *testKernel
	arm64Err    error
	arm64Runner string
)

// debianArm64 reads the cached Debian 6.1 arm64 kernel package, once, and
// builds the arm64 runner.
func debianArm64(t *testing.T) *testKernel {
	t.Helper()
	if _, err := QemuFor("arm64"); err != nil {
		testenv.Require(t, "qemu-system-aarch64", err.Error())
	}
	deb := testenv.DebianKernelArch(t, "6.1", "arm64")
	arm64Once.Do(func() {
		if arm64Runner, arm64Err = BuildRunnerArch(context.Background(), "..", filepath.Join(tmpRoot, "bpfarm-verifier-arm64"), "arm64"); arm64Err != nil {
			return
		}
		dir := filepath.Join(tmpRoot, "kernel-arm64-6.1")
		if arm64Err = os.MkdirAll(dir, 0o755); arm64Err != nil {
			return
		}
		tk := &testKernel{Series: "6.1"}
		arm64Err = source.Import(context.Background(), deb, source.Options{TempDir: dir, KeepImage: true}, func(k *source.Kernel) error {
			mods := map[string][]byte{}
			for _, m := range k.Modules {
				mods[m.Name] = m.BTF
			}
			tk.Release, tk.Image = k.ID.Release, k.Image
			var err error
			tk.Core, err = core.LoadKernel(k.ID.String(), k.BTF, mods)
			return err
		})
		arm64Kernel = tk
	})
	if arm64Err != nil {
		t.Fatal(arm64Err)
	}
	return arm64Kernel
}

// compileFor compiles a BPF C file for arch (CO-RE, against this host's
// vmlinux.h: the programs compiled here read no arch-specific types).
func compileFor(t *testing.T, src, arch string) []byte {
	t.Helper()
	if arch == "x86_64" {
		return compile(t, src)
	}
	inc := headers(t)
	out := filepath.Join(t.TempDir(), filepath.Base(src)+".o")
	cmd := exec.Command("clang-19", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_arm64", "-I", inc,
		"-I", filepath.Dir(src), "-c", src, "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compile %s: %v\n%s", src, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPredictionsAgreeWithVerifier boots real kernels (Debian 6.1 and 6.12
// amd64, and Debian 6.1 arm64 under qemu-system-aarch64) and checks the
// relocation report's prediction of every program against the kernel's own
// verdict: a program the report calls ok (or poisoned only where guarded)
// must load, in every mode; one it calls unsupported or poisoned must be
// refused. The objects: the features test object (tcx, which 6.1 lacks;
// the kfunc bpf_cast_to_kern_ctx, 6.2; weak kfuncs called with and
// without a bpf_ksym_exists guard), testdata/newer.bpf.c (its iterator
// program calls kfuncs 6.1 lacks, weak; its sext program uses a
// sign-extending mov, BPF ISA v4, which 6.1 lacks), testdata/isa.bpf.c
// (every other kind of ISA v4 instruction, two behind a CO-RE guard that
// 6.1's verifier prunes, and gotol, which stable 6.1 kernels have alone:
// unknown, so ok, on amd64; arm64's 6.1 JIT lacks it), and the examples.
func TestPredictionsAgreeWithVerifier(t *testing.T) {
	requireQemu(t)
	objects := map[string]string{"features": "../btf/core/testdata/features.bpf.c", "newer": "testdata/newer.bpf.c",
		"isa": "testdata/isa.bpf.c"}
	for name, src := range examples(t) {
		objects[name] = src
	}
	kernels := []agreementKernel{
		{"debian-6.1-amd64", "x86_64", func(t *testing.T) *testKernel { return debianKernel(t, "6.1") }},
		{"debian-6.12-amd64", "x86_64", func(t *testing.T) *testKernel { return debianKernel(t, "6.12") }},
		{"debian-6.1-arm64", "arm64", debianArm64},
	}
	// Predictions the test must see at least once, so that it can't pass
	// by predicting ok everywhere.
	seen := map[string]bool{}
	var seenMu sync.Mutex
	for _, ak := range kernels {
		t.Run(ak.name, func(t *testing.T) {
			k := ak.load(t)
			init := runner(t)
			if ak.arch == "arm64" {
				init = arm64Runner
			}
			for _, name := range slices.Sorted(func(yield func(string) bool) {
				for n := range objects {
					if !yield(n) {
						return
					}
				}
			}) {
				if ak.arch == "arm64" && name != "features" && name != "newer" && name != "isa" {
					continue // TCG emulation of arm64 is slow: the feature and ISA cases
				}
				obj := compileFor(t, objects[name], ak.arch)
				o, err := core.LoadObject(obj)
				if err != nil {
					t.Fatal(err)
				}
				res, err := o.Relocate(k.Core)
				if err != nil {
					t.Fatal(err)
				}
				predicted := map[string]core.ProgramReport{}
				for _, pr := range res.Report.Programs {
					predicted[pr.Name] = pr
				}
				job := &Job{Version: JobVersion, Nonce: NewNonce(), Program: name, Release: k.Release,
					Console: "/dev/" + Arches[ak.arch].Console, PowerOff: true}
				initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
				in := &Initramfs{Init: init, Job: job, Object: obj, Relocated: res.Relocated, MinBTF: res.MinBTF}
				if err := in.WriteFile(initrd); err != nil {
					t.Fatal(err)
				}
				vm := &VM{Arch: ak.arch, Kernel: k.Image, Initrd: initrd, Nonce: job.Nonce, Timeout: 4 * time.Minute}
				out, err := vm.Run(context.Background())
				if err == nil && out.Status == StatusKernelError {
					// TCG on a loaded machine: a boot can fail before /init
					// ("IO-APIC + timer doesn't work"). Boot once more.
					t.Logf("%s on %s: %s (%s); booting again", name, k.Release, out.Status, out.Reason)
					out, err = vm.Run(context.Background())
				}
				if err != nil {
					t.Fatal(err)
				}
				if out.Status != StatusComplete {
					t.Fatalf("%s on %s: %s: %s\n%s", name, k.Release, out.Status, out.Reason, out.Tail)
				}
				for key, r := range programResults(t, out) {
					pr, ok := predicted[r.Program]
					if !ok {
						t.Errorf("%s: verdict for unknown program %s", name, key)
						continue
					}
					id := name + "/" + r.Program
					wantLoad := pr.Status == core.StatusOK
					t.Logf("%s %s on %s: predicted %s %s; verifier accepted=%v attached=%v %s (%d insns)", id, r.Mode, k.Release,
						pr.Status, pr.Reason, r.Accepted, r.Attached, r.Error, r.Instructions)
					if r.Accepted != wantLoad {
						t.Errorf("%s %s on %s: the report says %s (%s), the kernel accepted=%v: %s\n%s", id, r.Mode, k.Release,
							pr.Status, pr.Reason, r.Accepted, r.Error, strings.Join(r.Log, "\n"))
					}
					seenMu.Lock()
					seen[fmt.Sprintf("%s %s %s", ak.name, id, pr.Status)] = true
					seenMu.Unlock()
				}
			}
		})
	}
	for _, want := range []string{
		"debian-6.1-amd64 features/tcx_pass unsupported", "debian-6.12-amd64 features/tcx_pass ok",
		"debian-6.1-amd64 features/kern_ctx unsupported", "debian-6.12-amd64 features/kern_ctx ok",
		"debian-6.1-amd64 features/rcu_guarded ok", "debian-6.1-amd64 features/rcu_unguarded unsupported",
		"debian-6.1-amd64 newer/iter unsupported", "debian-6.12-amd64 newer/iter ok",
		"debian-6.1-arm64 features/tcx_pass unsupported", "debian-6.1-arm64 features/kern_ctx unsupported",
		"debian-6.1-amd64 newer/sext unsupported", "debian-6.12-amd64 newer/sext ok", "debian-6.1-arm64 newer/sext unsupported",
		"debian-6.1-amd64 isa/ldsx unsupported", "debian-6.12-amd64 isa/ldsx ok", "debian-6.1-arm64 isa/ldsx unsupported",
		"debian-6.1-amd64 isa/sdiv unsupported", "debian-6.12-amd64 isa/sdiv ok",
		"debian-6.1-amd64 isa/bswap unsupported", "debian-6.12-amd64 isa/bswap ok",
		"debian-6.1-amd64 isa/gotol ok", "debian-6.12-amd64 isa/gotol ok", "debian-6.1-arm64 isa/gotol unsupported",
		"debian-6.1-amd64 isa/guarded_movsx ok", "debian-6.1-arm64 isa/guarded_movsx ok",
		"debian-6.1-amd64 isa/guarded_ldsx unsupported", "debian-6.12-amd64 isa/guarded_ldsx ok",
	} {
		if !seen[want] && !t.Failed() {
			t.Errorf("never compared: %s", want)
		}
	}
}
