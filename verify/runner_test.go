package verify

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestImageRelease(t *testing.T) {
	k := debianKernel(t, "6.1")
	f, err := os.Open(k.Image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rel, err := ImageRelease(f)
	if err != nil || rel != k.Release {
		t.Errorf("release %q, %v; want %q", rel, err, k.Release)
	}
	if _, err := ImageRelease(bytes.NewReader(make([]byte, 8192))); err != ErrNoVersion {
		t.Errorf("zeros: %v, want ErrNoVersion", err)
	}
}

func TestRunnerFor(t *testing.T) {
	// A copy alone in its own directory: other tests build runners for
	// other arches beside the shared one (bpfarm-verifier-arm64).
	b, err := os.ReadFile(runner(t))
	if err != nil {
		t.Fatal(err)
	}
	r := filepath.Join(t.TempDir(), RunnerName)
	if err := os.WriteFile(r, b, 0o755); err != nil {
		t.Fatal(err)
	}
	host := map[string]string{"amd64": "x86_64", "arm64": "arm64"}[runtime.GOARCH]
	if p, err := RunnerFor(r, host); err != nil || p != r {
		t.Errorf("%s: %q, %v; want the runner", host, p, err)
	}
	other := "arm64"
	if host == "arm64" {
		other = "x86_64"
	}
	if _, err := RunnerFor(r, other); !errors.Is(err, ErrNoRunner) {
		t.Errorf("%s: %v, want ErrNoRunner", other, err)
	}
	if _, err := RunnerFor(r, "mips"); !errors.Is(err, ErrNoRunner) {
		t.Errorf("mips: %v", err)
	}
}
