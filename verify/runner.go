package verify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RunnerName is the runner binary's name.
const RunnerName = "bpfarm-verifier"

// BuildRunner builds cmd/bpfarm-verifier of the module at moduleRoot as a
// static binary (CGO_ENABLED=0) at out, with the go command. Servers take a
// prebuilt runner (FindRunner); tests and development set-ups build it.
func BuildRunner(ctx context.Context, moduleRoot, out string) (string, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", abs, "./cmd/"+RunnerName)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %v: %s", RunnerName, err, strings.TrimSpace(stderr.String()))
	}
	return abs, nil
}

// FindRunner finds a prebuilt runner: next to the running executable
// (bin/bpfarm and bin/bpfarm-verifier), else on $PATH.
func FindRunner() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), RunnerName)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath(RunnerName)
	if err != nil {
		return "", fmt.Errorf("no %s next to this executable or on $PATH (build it with: CGO_ENABLED=0 go build -o bin/%s ./cmd/%s)", RunnerName, RunnerName, RunnerName)
	}
	return p, nil
}
