package inspect

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The tests compile testdata/*.c with the real clang at test time, against
// a vmlinux.h generated once per run from the running kernel's BTF.

var (
	clangPath  string
	vmlinuxDir string
	// toolErr explains why objects can't be built, if they can't.
	toolErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inspect-vmlinux-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	toolErr = setupTools(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// setupTools finds clang and writes vmlinux.h into dir.
func setupTools(dir string) error {
	var err error
	if clangPath, err = exec.LookPath("clang-19"); err != nil {
		return fmt.Errorf("clang-19 not found: %w", err)
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		return fmt.Errorf("libbpf headers (libbpf-dev) not installed: %w", err)
	}
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/bpftool"); serr != nil {
			return fmt.Errorf("bpftool not found: %w", err)
		}
		bpftool = "/usr/sbin/bpftool"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("kernel has no BTF: %w", err)
	}

	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("generate vmlinux.h: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinux.h"), stdout.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write vmlinux.h: %w", err)
	}
	vmlinuxDir = dir
	return nil
}

// requireTools skips t, or fails it if BPFARM_TEST_STRICT=1, when objects
// can't be built on this machine.
func requireTools(t testing.TB) {
	t.Helper()
	if toolErr == nil {
		return
	}
	if os.Getenv("BPFARM_TEST_STRICT") == "1" {
		t.Fatal(toolErr)
	}
	t.Skip(toolErr)
}

// compile builds testdata/name.c and returns the object.
func compile(t testing.TB, name string) []byte {
	t.Helper()
	requireTools(t)

	out := filepath.Join(t.TempDir(), name+".o")
	var stderr bytes.Buffer
	cmd := exec.Command(clangPath, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
		"-I"+vmlinuxDir, "-c", filepath.Join("testdata", name+".c"), "-o", out)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("compile %s.c: %v\n%s", name, err, stderr.String())
	}
	obj, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// inspectFile compiles and inspects testdata/name.c.
func inspectFile(t *testing.T, name string) *Object {
	t.Helper()
	o, err := Inspect(compile(t, name))
	if err != nil {
		t.Fatalf("Inspect(%s): %v", name, err)
	}
	return o
}

// errorLines splits a (joined) error into its lines.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	var lines []string
	for _, e := range unjoin(err) {
		lines = append(lines, e.Error())
	}
	return lines
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
