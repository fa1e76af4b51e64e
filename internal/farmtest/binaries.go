//go:build linux

package farmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// BinariesOf are the programs a farm runs, built from this module.
type BinariesOf struct {
	Bpfarm, Agent string
}

var (
	buildOnce sync.Once
	built     BinariesOf
	buildErr  error
	buildDir  string
)

// Binaries builds bpfarm (with cgo, as make build does) and bpfarm-agent
// (static) once per test binary, into a temporary directory that Main
// removes.
func Binaries(t testing.TB) BinariesOf {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "bpfarm-farmtest-bin")
		if buildErr != nil {
			return
		}
		built = BinariesOf{Bpfarm: filepath.Join(buildDir, "bpfarm"), Agent: filepath.Join(buildDir, "bpfarm-agent")}
		for _, b := range []struct{ out, pkg, cgo string }{
			{built.Bpfarm, "github.com/bpfarm/bpfarm/cmd/bpfarm", "1"},
			{built.Agent, "github.com/bpfarm/bpfarm/cmd/bpfarm-agent", "0"},
		} {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// Main runs the tests of a package that uses farms, then removes the
// binaries Binaries built: call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}
