package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// LibbpfVersion is the newer libbpf whose headers tests import as a header
// set (bpf_ksym_exists, the BPF_UPROBE/BPF_KPROBE forms, usdt.bpf.h).
const LibbpfVersion = "v1.5.0"

// libbpfHeaders are the headers libbpf's `make install_headers` installs.
var libbpfHeaders = []string{
	"bpf.h", "libbpf.h", "btf.h", "libbpf_common.h", "libbpf_legacy.h",
	"bpf_helpers.h", "bpf_helper_defs.h", "bpf_tracing.h", "bpf_endian.h",
	"bpf_core_read.h", "skel_internal.h", "libbpf_version.h", "usdt.bpf.h",
}

// LibbpfHeaders returns a directory holding the installed headers of the
// real libbpf LibbpfVersion, fetched once into ~/.cache/bpfarm/libbpf-VERSION.
// libbpf's GitHub repository has no go.mod, but the Go module proxy serves
// it as the module github.com/libbpf/libbpf all the same (its src/ holds
// the headers, bpf_helper_defs.h included): `go mod download` fetches it,
// with its checksum checked against the Go checksum database.
func LibbpfHeaders(t testing.TB) string {
	t.Helper()
	dir, err := libbpfHeaders1()
	if err != nil {
		Require(t, "libbpf "+LibbpfVersion+" headers", err.Error())
	}
	return dir
}

func libbpfHeaders1() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(home, ".cache", "bpfarm", "libbpf-"+LibbpfVersion)
	if _, err := os.Stat(filepath.Join(dst, "usdt.bpf.h")); err == nil {
		return dst, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go not found to fetch github.com/libbpf/libbpf@%s", LibbpfVersion)
	}
	cmd := exec.Command(goBin, "mod", "download", "-json", "github.com/libbpf/libbpf@"+LibbpfVersion)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download github.com/libbpf/libbpf@%s: %v: %s", LibbpfVersion, err, out)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download github.com/libbpf/libbpf@%s: %s %s", LibbpfVersion, mod.Error, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".libbpf-")
	if err != nil {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if tmp, err = os.MkdirTemp(filepath.Dir(dst), ".libbpf-"); err != nil {
			return "", err
		}
	}
	defer os.RemoveAll(tmp)
	for _, h := range libbpfHeaders {
		data, err := os.ReadFile(filepath.Join(mod.Dir, "src", h))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tmp, h), data, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(filepath.Join(dst, "usdt.bpf.h")); serr != nil {
			return "", err
		}
	}
	return dst, nil
}
