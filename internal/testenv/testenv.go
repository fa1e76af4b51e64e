// Package testenv provides what tests need from their environment (external
// programs, servers) and one rule for when something is missing: the test
// is skipped, unless BPFARM_TEST_STRICT=1 (set by make test and CI), where
// it fails, so that nothing is silently left untested.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// StrictEnv is the environment variable that, set to 1 (or true), turns
// missing test requirements into failures.
const StrictEnv = "BPFARM_TEST_STRICT"

// Strict reports whether missing test requirements fail tests rather than
// skip them (BPFARM_TEST_STRICT=1).
func Strict() bool {
	v, err := strconv.ParseBool(os.Getenv(StrictEnv))
	return err == nil && v
}

// Require reports that the test's requirement what (e.g. "minio") is not
// available, for reason: it skips the test, or fails it when Strict. Call it
// only when the requirement is missing; it does not return.
func Require(t testing.TB, what, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("%s unavailable: %s (%s=1: not skipping)", what, reason, StrictEnv)
		return
	}
	t.Skipf("%s unavailable: %s (skipping; %s=1 makes this fail)", what, reason, StrictEnv)
}

// BinDir returns the directory where bpfarm's development tools are
// installed: $HOME/.cache/bpfarm/bin.
func BinDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "bpfarm", "bin"), nil
}

// LookBinary finds the program name: at $env if env is set and not empty,
// else in BinDir, else on $PATH. Its error says where it looked.
func LookBinary(name, env string) (string, error) {
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if err := isExecutable(p); err != nil {
				return "", fmt.Errorf("$%s=%s: %w", env, p, err)
			}
			return p, nil
		}
	}
	var tried []string
	if env != "" {
		tried = append(tried, "$"+env+" (unset)")
	}
	if dir, err := BinDir(); err == nil {
		p := filepath.Join(dir, name)
		if isExecutable(p) == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	tried = append(tried, "$PATH")
	return "", fmt.Errorf("%s not found; looked at %q", name, tried)
}

// Binary returns the path of program name as found by LookBinary, or calls
// Require. If env is set but does not name an executable, the test fails
// even when not Strict: that is a broken setup, not a missing tool.
func Binary(t testing.TB, name, env string) string {
	t.Helper()
	return binary(t, name, env, "")
}

// binary is Binary, with a hint (how to install) added to Require's reason.
func binary(t testing.TB, name, env, hint string) string {
	t.Helper()
	p, err := LookBinary(name, env)
	if err == nil {
		return p
	}
	if env != "" && os.Getenv(env) != "" {
		t.Fatalf("%s: %v", name, err)
		return ""
	}
	reason := err.Error()
	if hint != "" {
		reason += "; " + hint
	}
	Require(t, name, reason)
	return ""
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}
