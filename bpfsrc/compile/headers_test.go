package compile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPrepareHeaders(t *testing.T) {
	requireTools(t)
	dir := t.TempDir()
	h1, err := PrepareHeaders(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"libbpf/bpf/bpf_helpers.h", "libbpf/bpf/bpf_core_read.h", "uapi/x86_64/linux/bpf.h", "uapi/x86_64/asm/types.h", "uapi/x86_64/asm-generic/int-ll64.h"} {
		info, err := os.Lstat(filepath.Join(dir, f))
		if err != nil || !info.Mode().IsRegular() {
			t.Errorf("%s: %v, %v", f, info, err)
		}
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			t.Errorf("%s is a symbolic link", p)
		}
		return nil
	})
	d1, err := h1.Digest(ArchX86_64)
	if err != nil || len(d1) != 64 {
		t.Fatalf("digest %q, %v", d1, err)
	}

	// Again: nothing is copied, the digest is the same.
	stamp := filepath.Join(dir, "libbpf", "bpf", "bpf_helpers.h")
	before, _ := os.Stat(stamp)
	time.Sleep(10 * time.Millisecond)
	h2, err := PrepareHeaders(dir)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(stamp)
	if d2, _ := h2.Digest(ArchX86_64); d2 != d1 {
		t.Errorf("digest changed: %s, %s", d1, d2)
	}
	if !before.ModTime().Equal(after.ModTime()) {
		t.Error("headers copied again")
	}

	// A damaged copy is replaced.
	os.WriteFile(filepath.Join(dir, "libbpf.digest"), []byte("x\n"), 0o644)
	if _, err := PrepareHeaders(dir); err != nil {
		t.Fatal(err)
	}
	if d3, _ := h2.Digest(ArchX86_64); d3 != d1 {
		t.Errorf("digest changed: %s, %s", d1, d3)
	}

	if _, err := h1.Digest("mips"); !errors.Is(err, ErrUnsupportedArch) {
		t.Errorf("mips: %v", err)
	}
	if _, err := os.Stat(uapiTrees[ArchArm64][0].src); err == nil {
		d, err := h1.Digest(ArchArm64)
		if err != nil || d == d1 {
			t.Errorf("arm64 digest %q, %v", d, err)
		}
	} else if _, err := h1.Digest(ArchArm64); !errors.Is(err, ErrUnsupportedArch) {
		t.Errorf("arm64 without headers: %v", err)
	}
	t.Logf("arches %v", h1.Arches())
}

func TestHostVmlinux(t *testing.T) {
	requireTools(t)
	v := &HostVmlinux{CacheDir: t.TempDir()}
	p1, d1, err := v.VmlinuxH(context.Background(), ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if filepath.Base(p1) != "vmlinux.h" || d1 != hex.EncodeToString(sum[:]) {
		t.Errorf("path %s digest %s", p1, d1)
	}
	// A second provider on the same cache reuses the file.
	v2 := &HostVmlinux{CacheDir: v.CacheDir, Bpftool: "/nonexistent/bpftool"}
	p2, d2, err := v2.VmlinuxH(context.Background(), ArchX86_64)
	if err != nil || p2 != p1 || d2 != d1 {
		t.Errorf("second provider: %s %s %v", p2, d2, err)
	}
	if _, _, err := v.VmlinuxH(context.Background(), ArchArm64); !errors.Is(err, ErrUnsupportedArch) || err.Error() != "unsupported architecture: no arm64 kernel BTF in the archive yet" {
		t.Errorf("arm64: %v", err)
	}
	if _, _, err := v.VmlinuxH(context.Background(), "riscv"); !errors.Is(err, ErrUnsupportedArch) {
		t.Errorf("riscv: %v", err)
	}
}
