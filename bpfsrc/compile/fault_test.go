//go:build linux

package compile

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/fault"
)

// wantNoSpace requires err to be the farm's failure for a full disk: an
// *InfraError wrapping ENOSPC, classified by server/fault as "no space left
// on the data volume", never an *Error (the user's).
func wantNoSpace(t *testing.T, what string, err error) {
	t.Helper()
	var ce *Error
	var ie *InfraError
	switch {
	case err == nil:
		t.Fatalf("%s: compile succeeded on a full disk", what)
	case errors.As(err, &ce):
		t.Fatalf("%s: full disk reported as the user's failure: %v\n%s", what, err, ce.Log)
	case !errors.As(err, &ie):
		t.Fatalf("%s: %T %v, want *InfraError", what, err, err)
	case !errors.Is(err, syscall.ENOSPC):
		t.Fatalf("%s: %v does not wrap ENOSPC", what, err)
	case fault.Cause(err) != fault.ErrNoSpace.Error() || fault.Classify(err) != fault.Infra:
		t.Fatalf("%s: %v classified %s %q", what, err, fault.Classify(err), fault.Cause(err))
	}
	t.Logf("%s: %v", what, err)
}

// TestCompileFullDisk compiles with the work directory on a full volume:
// whether the job directory cannot be written or clang cannot write the
// object, the failure is the farm's (ENOSPC), and compiles work again once
// space is freed.
func TestCompileFullDisk(t *testing.T) {
	vol := testenv.SmallVolume(t, 16<<20)
	c := newCompiler(t, func(cfg *Config) { cfg.WorkDir = filepath.Join(vol.Dir, "work") })
	req := Request{Bundle: typicalProgram(t), Arch: ArchX86_64}
	compileOK(t, c, req)

	// Room for the sources, not for clang's output.
	vol.FillLeaving(64 << 10)
	_, err := c.Compile(context.Background(), req)
	wantNoSpace(t, "clang writing the object", err)

	vol.Release()
	vol.Fill()
	_, err = c.Compile(context.Background(), req)
	wantNoSpace(t, "extracting the sources", err)

	vol.Release()
	compileOK(t, c, req)
}

// TestCompileHostIOErrorIsToolError checks that only clang's own errors
// about the host's file systems make a compile the farm's failure: a source that says so with
// #error is still the user's.
func TestCompileHostIOErrorIsToolError(t *testing.T) {
	c := newCompiler(t, nil)
	ce := compileErr(t, c, Request{Bundle: bundle(t, "prog.bpf.c", "#error No space left on device\n"), Arch: ArchX86_64})
	t.Logf("user's #error: %v", ce)
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"error: unable to open output file 'prog.o': 'No space left on device'", true},
		{"fatal error: error in backend: IO failure on output stream: No space left on device", true},
		{"clang-19: error: unable to remove file: Disk quota exceeded", true},
		{"bwrap: Can't mkdir /tmp/x: No space left on device", true},
		{"prog.bpf.c:1:2: error: No space left on device", false},
		{"include/x.h:1:2: fatal error: No space left on device", false},
		{"error: unknown argument: '-foo'", false},
		{"fatal error: cannot open file 'x.h': Input/output error", true},
		{"x.c:1:10: fatal error: cannot open file 'x.h': Input/output error", false},
	} {
		err := hostIOError(&runResult{code: 1, out: []byte("some line\n" + tc.line + "\n")})
		if got := err != nil; got != tc.want {
			t.Errorf("hostIOError(%q) = %v, want an error: %v", tc.line, err, tc.want)
		}
	}
}

// TestPCHFailureNotRemembered makes the build of the precompiled header
// fail (its volume is full): compiles go on without it, and once space is
// back a later compile builds and uses it. (A failed build used to be
// remembered as built: every later compile mounted the missing file and
// failed, until a restart.)
func TestPCHFailureNotRemembered(t *testing.T) {
	h, _ := farm(t)
	vol := testenv.SmallVolume(t, 256<<20)
	v := &HostVmlinux{CacheDir: filepath.Join(vol.Dir, "vmlinux")}
	c := newCompiler(t, func(cfg *Config) { cfg.Headers = h; cfg.Vmlinux = v; cfg.UsePCH = true })
	if _, _, err := v.VmlinuxH(context.Background(), ArchX86_64); err != nil {
		t.Fatal(err)
	}
	req := Request{Bundle: typicalProgram(t), Arch: ArchX86_64}

	vol.Fill()
	res := compileOK(t, c, req)
	if res.UsedPCH {
		t.Fatal("compile used a precompiled header that could not be written")
	}
	// Within pchRetryAfter, compiles go without it and do not retry.
	res = compileOK(t, c, req)
	if res.UsedPCH {
		t.Fatal("compile used a precompiled header that could not be written")
	}

	vol.Release()
	c.pchRetry = 0
	res = compileOK(t, c, req)
	if !res.UsedPCH {
		t.Fatal("after space came back, the precompiled header was not built again")
	}
	c.pchRetry = pchRetryAfter
	if res := compileOK(t, c, req); !res.UsedPCH {
		t.Fatal("the precompiled header built was not used")
	}
}
