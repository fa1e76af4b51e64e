package compile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

// shared holds what every test reuses: the farm headers and vmlinux.h (and
// with them the precompiled header) are built once per test binary.
var shared struct {
	once    sync.Once
	dir     string
	headers *Headers
	vmlinux *HostVmlinux
	err     error
	missing string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// requireTools skips the test (or fails it with BPFARM_TEST_STRICT=1) unless
// the tools a real compile needs are installed.
func requireTools(tb testing.TB) {
	tb.Helper()
	var missing []string
	if _, err := findTool("clang-19"); err != nil {
		if _, err := findTool("clang"); err != nil {
			missing = append(missing, "clang")
		}
	}
	for _, name := range []string{"bwrap", "prlimit"} {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if _, err := findTool("bpftool", "/usr/sbin/bpftool", "/sbin/bpftool"); err != nil {
		missing = append(missing, "bpftool")
	}
	for _, f := range []string{libbpfTree.src + "/bpf_helpers.h", "/sys/kernel/btf/vmlinux"} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if HostArch() != ArchX86_64 {
		missing = append(missing, "an x86_64 host")
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %v", missing)
	if os.Getenv("BPFARM_TEST_STRICT") == "1" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// farm returns the shared headers and vmlinux provider.
func farm(tb testing.TB) (*Headers, *HostVmlinux) {
	tb.Helper()
	requireTools(tb)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "bpfarm-compile-test-")
		if shared.err != nil {
			return
		}
		shared.headers, shared.err = PrepareHeaders(filepath.Join(shared.dir, "headers"))
		shared.vmlinux = &HostVmlinux{CacheDir: filepath.Join(shared.dir, "vmlinux")}
	})
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.headers, shared.vmlinux
}

// newCompiler returns a Compiler on the shared farm with a private work
// directory; mod may change the configuration.
func newCompiler(tb testing.TB, mod func(*Config)) *Compiler {
	tb.Helper()
	h, v := farm(tb)
	cfg := Config{Headers: h, Vmlinux: v, WorkDir: tb.TempDir(), Timeout: 30 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// bundle makes a bundle of name/content pairs; the first file is the entry.
func bundle(tb testing.TB, files ...string) *bpfsrc.Bundle {
	tb.Helper()
	if len(files)%2 != 0 {
		tb.Fatal("bundle: odd number of arguments")
	}
	var fs []bpfsrc.File
	for i := 0; i < len(files); i += 2 {
		fs = append(fs, bpfsrc.File{Name: files[i], Data: []byte(files[i+1])})
	}
	b, err := bpfsrc.New(files[0], fs, bpfsrc.DefaultLimits)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// typicalProgram is testdata/prog.bpf.c, a CO-RE tracepoint + ring buffer
// program.
func typicalProgram(tb testing.TB) *bpfsrc.Bundle {
	tb.Helper()
	src, err := os.ReadFile("testdata/prog.bpf.c")
	if err != nil {
		tb.Fatal(err)
	}
	return bundle(tb, "prog.bpf.c", string(src))
}

// compileErr compiles and requires a *Error.
func compileErr(tb testing.TB, c *Compiler, req Request) *Error {
	tb.Helper()
	if req.Arch == "" {
		req.Arch = ArchX86_64
	}
	res, err := c.Compile(context.Background(), req)
	if err == nil {
		tb.Fatalf("compile succeeded, want an error; log:\n%s", res.Log)
	}
	var ce *Error
	if !errors.As(err, &ce) {
		tb.Fatalf("got %T %v, want *Error", err, err)
	}
	return ce
}

// compileOK compiles and requires success.
func compileOK(tb testing.TB, c *Compiler, req Request) *Result {
	tb.Helper()
	if req.Arch == "" {
		req.Arch = ArchX86_64
	}
	res, err := c.Compile(context.Background(), req)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			tb.Fatalf("%v\n%s", err, ce.Log)
		}
		tb.Fatal(err)
	}
	return res
}
