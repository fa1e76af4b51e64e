package verify

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
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
	return BuildRunnerArch(ctx, moduleRoot, out, "")
}

// BuildRunnerArch is BuildRunner for the kernels of arch (x86_64, arm64):
// it cross-compiles with that arch's GOARCH. An empty arch builds for the
// host.
func BuildRunnerArch(ctx context.Context, moduleRoot, out, arch string) (string, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if arch != "" {
		a, ok := Arches[arch]
		if !ok {
			return "", fmt.Errorf("arch %q: %w", arch, ErrNoRunner)
		}
		env = append(env, "GOARCH="+a.GOARCH)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", abs, "./cmd/"+RunnerName)
	cmd.Dir = moduleRoot
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s for %s: %v: %s", RunnerName, firstNonEmpty(arch, "the host"), err, strings.TrimSpace(stderr.String()))
	}
	return abs, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
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

// ErrNoRunner is returned (wrapped) by RunnerFor when there is no runner
// for an arch.
var ErrNoRunner = errors.New("no verifier runner for this arch")

// elfMachines are the ELF machines of the arches.
var elfMachines = map[string]elf.Machine{"x86_64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// RunnerFor returns the runner binary for kernels of arch: runner itself
// when it is an ELF for arch, else runner-ARCH beside it (e.g.
// bpfarm-verifier-arm64).
func RunnerFor(runner, arch string) (string, error) {
	want, ok := elfMachines[arch]
	if !ok {
		return "", fmt.Errorf("arch %q: %w", arch, ErrNoRunner)
	}
	for _, p := range []string{runner, runner + "-" + arch} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		m := f.Machine
		f.Close()
		if m == want {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s kernels need a %s build of %s at %s-%s (GOARCH=%s CGO_ENABLED=0 go build -o %s-%s ./cmd/%s): %w",
		arch, arch, RunnerName, runner, arch, Arches[arch].GOARCH, runner, arch, RunnerName, ErrNoRunner)
}
