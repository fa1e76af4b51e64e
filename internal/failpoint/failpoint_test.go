package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	for _, bad := range []string{"a@0", "a@x", "a=explode"} {
		if err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestError(t *testing.T) {
	defer Disable("t/err")
	if err := Error("t/err"); err != nil {
		t.Fatalf("disarmed: %v", err)
	}
	if err := Parse("t/err=error@2"); err != nil {
		t.Fatal(err)
	}
	if err := Error("t/err"); err != nil {
		t.Fatalf("first hit: %v", err)
	}
	for range 2 {
		if err := Error("t/err"); !errors.Is(err, ErrInjected) || !strings.Contains(err.Error(), "t/err") {
			t.Fatalf("armed: %v", err)
		}
	}
	Disable("t/err")
	if err := Error("t/err"); err != nil || armed.Load() {
		t.Fatalf("disabled: %v", err)
	}
}

// TestCrash arms a crash in a child process (this test binary again) and
// checks that it dies by SIGKILL on the second hit, not before.
func TestCrash(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") != "" {
		Hit("t/crash")
		os.Stdout.WriteString("after first\n")
		Hit("t/crash")
		os.Stdout.WriteString("after second\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"=t/crash@2")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v, output %q", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v", ee)
	}
	if string(out) != "after first\n" {
		t.Fatalf("child output %q", out)
	}
}

func BenchmarkHitDisarmed(b *testing.B) {
	for b.Loop() {
		Hit("bench/off")
	}
}
