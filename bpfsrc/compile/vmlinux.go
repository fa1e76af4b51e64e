package compile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Target architectures.
const (
	ArchX86_64 = "x86_64"
	ArchArm64  = "arm64"
)

// ErrUnsupportedArch is wrapped by errors about a target architecture the
// farm cannot compile for (yet).
var ErrUnsupportedArch = errors.New("unsupported architecture")

// checkArch reports an error unless arch is a target architecture name.
func checkArch(arch string) error {
	switch arch {
	case ArchX86_64, ArchArm64:
		return nil
	}
	return fmt.Errorf("%w %q: the target architecture must be %s or %s", ErrUnsupportedArch, arch, ArchX86_64, ArchArm64)
}

// HostArch returns the target architecture name of the machine the farm runs
// on, or "" if it is not one the farm knows.
func HostArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return ArchX86_64
	case "arm64":
		return ArchArm64
	}
	return ""
}

// VmlinuxProvider provides the vmlinux.h (the kernel's types, generated from
// its BTF) that programs for a target architecture are compiled against.
type VmlinuxProvider interface {
	// VmlinuxH returns the path of a file named vmlinux.h for arch, which
	// must not change while it is in use, and the digest of its content.
	VmlinuxH(ctx context.Context, arch string) (path string, digest string, err error)
}

// HostVmlinux is a VmlinuxProvider that generates vmlinux.h from the
// running kernel's BTF with bpftool. It supports the host's architecture
// only.
//
// The header is generated once per BTF content into CacheDir. A HostVmlinux
// must not be copied after first use.
type HostVmlinux struct {
	// CacheDir holds the generated headers, one directory per BTF digest.
	CacheDir string
	// BTFPath is the kernel BTF to dump; default /sys/kernel/btf/vmlinux.
	BTFPath string
	// Bpftool is the bpftool binary; default bpftool from PATH, /usr/sbin
	// or /sbin.
	Bpftool string

	mu   sync.Mutex
	memo *vmlinuxMemo
}

type vmlinuxMemo struct {
	btf    string // BTFPath
	size   int64
	mtime  time.Time
	ino    uint64
	path   string
	digest string
}

// VmlinuxH implements VmlinuxProvider.
func (h *HostVmlinux) VmlinuxH(ctx context.Context, arch string) (string, string, error) {
	if err := checkArch(arch); err != nil {
		return "", "", err
	}
	if arch != HostArch() {
		return "", "", fmt.Errorf("%w: no %s kernel BTF in the archive yet", ErrUnsupportedArch, arch)
	}
	if h.CacheDir == "" {
		return "", "", errors.New("vmlinux.h: HostVmlinux.CacheDir is not set")
	}
	btfPath := h.BTFPath
	if btfPath == "" {
		btfPath = "/sys/kernel/btf/vmlinux"
	}

	h.mu.Lock()
	defer h.mu.Unlock()

	info, err := os.Stat(btfPath)
	if err != nil {
		return "", "", fmt.Errorf("vmlinux.h: kernel BTF: %w", err)
	}
	var ino uint64
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	if m := h.memo; m != nil && m.btf == btfPath && m.size == info.Size() && m.mtime.Equal(info.ModTime()) && m.ino == ino {
		if _, err := os.Stat(m.path); err == nil {
			return m.path, m.digest, nil
		}
	}

	btf, err := os.ReadFile(btfPath)
	if err != nil {
		return "", "", fmt.Errorf("vmlinux.h: kernel BTF: %w", err)
	}
	btfSum := sha256.Sum256(btf)
	dir := filepath.Join(h.CacheDir, arch+"-"+hex.EncodeToString(btfSum[:8]))
	path := filepath.Join(dir, "vmlinux.h")

	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data, err = h.generate(ctx, btfPath)
		if err != nil {
			return "", "", err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", "", fmt.Errorf("vmlinux.h: %w", err)
		}
		if err := writeFileAtomic(path, data); err != nil {
			return "", "", fmt.Errorf("vmlinux.h: %w", err)
		}
	} else if err != nil {
		return "", "", fmt.Errorf("vmlinux.h: %w", err)
	}

	sum := sha256.Sum256(data)
	h.memo = &vmlinuxMemo{
		btf: btfPath, size: info.Size(), mtime: info.ModTime(), ino: ino,
		path: path, digest: hex.EncodeToString(sum[:]),
	}
	return h.memo.path, h.memo.digest, nil
}

func (h *HostVmlinux) generate(ctx context.Context, btfPath string) ([]byte, error) {
	bpftool := h.Bpftool
	if bpftool == "" {
		var err error
		bpftool, err = findTool("bpftool", "/usr/sbin/bpftool", "/sbin/bpftool")
		if err != nil {
			return nil, fmt.Errorf("vmlinux.h: %w", err)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bpftool, "btf", "dump", "file", btfPath, "format", "c")
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("vmlinux.h: %s: %w: %s", bpftool, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if !bytes.Contains(stdout.Bytes(), []byte("#ifndef __VMLINUX_H__")) {
		return nil, fmt.Errorf("vmlinux.h: %s produced no vmlinux.h (%d bytes)", bpftool, stdout.Len())
	}
	return stdout.Bytes(), nil
}

// findTool returns the first of name (looked up in PATH) and fallbacks that
// exists.
func findTool(name string, fallbacks ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH", name)
}
