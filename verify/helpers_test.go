package verify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/btf/core"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

var (
	tmpRoot string // removed by TestMain

	runnerOnce sync.Once
	runnerPath string
	runnerErr  error

	kernelsMu sync.Mutex
	kernels   = map[string]*testKernel{}

	hdrOnce sync.Once
	hdrDir  string
	hdrErr  error
)

func TestMain(m *testing.M) {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "bpfarm-verify-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// runner builds cmd/bpfarm-verifier as a static binary, once.
func runner(t testing.TB) string {
	t.Helper()
	runnerOnce.Do(func() {
		runnerPath, runnerErr = BuildRunner(context.Background(), "..", filepath.Join(tmpRoot, "bpfarm-verifier"))
	})
	if runnerErr != nil {
		t.Fatalf("build runner: %v", runnerErr)
	}
	return runnerPath
}

// testKernel is a Debian kernel package, read with package source.
type testKernel struct {
	Series  string
	Release string
	Image   string // compressed image
	Core    *core.Kernel
}

// debianKernel reads the cached Debian kernel of series, once.
func debianKernel(t testing.TB, series string) *testKernel {
	t.Helper()
	deb := testenv.DebianKernel(t, series)
	kernelsMu.Lock()
	defer kernelsMu.Unlock()
	if k, ok := kernels[series]; ok {
		return k
	}
	tk := &testKernel{Series: series}
	dir := filepath.Join(tmpRoot, "kernel-"+series)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := source.Import(context.Background(), deb, source.Options{TempDir: dir, KeepImage: true}, func(k *source.Kernel) error {
		if k.Image == "" {
			return fmt.Errorf("%s: no kernel image", deb)
		}
		tk.Release, tk.Image = k.ID.Release, k.Image
		mods := map[string][]byte{}
		for _, m := range k.Modules {
			mods[m.Name] = m.BTF
		}
		var err error
		tk.Core, err = core.LoadKernel(k.ID.String(), k.BTF, mods)
		return err
	})
	if err != nil {
		t.Fatalf("read %s: %v", deb, err)
	}
	kernels[series] = tk
	return tk
}

// requireQemu skips (or fails, strict) without qemu-system-x86_64.
func requireQemu(t testing.TB) string {
	t.Helper()
	q, err := QemuFor("x86_64")
	if err != nil {
		testenv.Require(t, "qemu-system-x86_64", err.Error())
	}
	return q
}

// headers returns a directory with a vmlinux.h of this host's BTF.
func headers(t testing.TB) string {
	t.Helper()
	for _, tool := range []string{"clang-19", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Require(t, tool, "needed to compile test programs (make deps installs it)")
		}
	}
	hdrOnce.Do(func() {
		hdrDir = filepath.Join(tmpRoot, "include")
		if hdrErr = os.MkdirAll(hdrDir, 0o755); hdrErr != nil {
			return
		}
		out, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").Output()
		if err != nil {
			hdrErr = fmt.Errorf("bpftool btf dump: %w", err)
			return
		}
		hdrErr = os.WriteFile(filepath.Join(hdrDir, "vmlinux.h"), out, 0o644)
	})
	if hdrErr != nil {
		t.Fatal(hdrErr)
	}
	return hdrDir
}

// compile compiles a BPF C file (CO-RE, against this host's vmlinux.h).
func compile(t testing.TB, src string) []byte {
	t.Helper()
	inc := headers(t)
	out := filepath.Join(t.TempDir(), filepath.Base(src)+".o")
	cmd := exec.Command("clang-19", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I", inc,
		"-I", filepath.Dir(src), "-I", "/usr/include/x86_64-linux-gnu", "-c", src, "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compile %s: %v\n%s", src, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testArtifact is an object relocated for a kernel.
type testArtifact struct {
	Name      string
	Object    []byte
	Relocated []byte
	MinBTF    []byte
}

// relocate relocates obj for k, as the farm does.
func relocate(t testing.TB, name string, obj []byte, k *testKernel) *testArtifact {
	t.Helper()
	o, err := core.LoadObject(obj)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	res, err := o.Relocate(k.Core)
	if err != nil {
		t.Fatalf("relocate %s for %s: %v", name, k.Release, err)
	}
	return &testArtifact{Name: name, Object: obj, Relocated: res.Relocated, MinBTF: res.MinBTF}
}

// examples lists the example programs (not broken).
func examples(t testing.TB) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("../examples")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == "broken" {
			continue
		}
		srcs, _ := filepath.Glob(filepath.Join("../examples", e.Name(), "*.bpf.c"))
		if len(srcs) == 1 {
			out[e.Name()] = srcs[0]
		}
	}
	if len(out) < 3 {
		t.Fatalf("want at least 3 examples, found %v", out)
	}
	return out
}

// bootArtifact verifies a on k in a VM.
func bootArtifact(t testing.TB, a *testArtifact, k *testKernel, timeout time.Duration) (*Outcome, *Job) {
	t.Helper()
	job := &Job{Version: JobVersion, Nonce: NewNonce(), Program: a.Name, Release: k.Release, Console: "/dev/ttyS0", PowerOff: true}
	initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
	in := &Initramfs{Init: runner(t), Job: job, Object: a.Object, Relocated: a.Relocated, MinBTF: a.MinBTF}
	if err := in.WriteFile(initrd); err != nil {
		t.Fatal(err)
	}
	vm := &VM{Kernel: k.Image, Initrd: initrd, Nonce: job.Nonce, Timeout: timeout}
	out, err := vm.Run(context.Background())
	if err != nil {
		t.Fatalf("run VM: %v", err)
	}
	return out, job
}

// buildGo builds the Go main package in dir (relative to this package) as
// a static binary at out.
func buildGo(t testing.TB, dir, out string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, "./"+dir)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", dir, err, b)
	}
	return out, nil
}
