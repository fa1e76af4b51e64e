package source

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
)

// TestXZX86BCJ decodes what the kernel's scripts/xz_wrap.sh makes for x86
// ("xz --check=crc32 --x86 --lzma2"), the payload of Debian's generic amd64
// vmlinuz that package xz refuses ("invalid checksum for file header"
// came from retrying later false magic matches), compressed by the real xz
// from x86 machine code (this test binary), and a plain xz stream, which
// still goes through package xz.
func TestXZX86BCJ(t *testing.T) {
	xzBin, err := exec.LookPath("xz")
	if err != nil {
		testenv.Require(t, "xz", err.Error())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 8<<20 {
		data = data[:8<<20]
	}
	for _, args := range [][]string{
		{"--check=crc32", "--x86", "--lzma2=preset=6,dict=1MiB"},
		{"--check=crc32", "--lzma2=preset=1"},
	} {
		cmd := exec.Command(xzBin, append([]string{"-c"}, args...)...)
		cmd.Stdin = bytes.NewReader(data)
		packed, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		c := codecAt(packed)
		if c == nil || c.name != "xz" {
			t.Fatalf("xz %v: no xz codec for the stream", args)
		}
		rc, err := c.open(bytes.NewReader(packed))
		if err != nil {
			t.Fatalf("xz %v: open: %v", args, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("xz %v: read: %v", args, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("xz %v: decoded %d bytes differ from the %d compressed", args, len(got), len(data))
		}

		// A corrupted payload is refused, not decoded wrong.
		bad := bytes.Clone(packed)
		bad[len(bad)/2] ^= 0x55
		if rc, err := c.open(bytes.NewReader(bad)); err == nil {
			out, err := io.ReadAll(rc)
			if err == nil && bytes.Equal(out, data) {
				t.Errorf("xz %v: corrupted stream decoded as the original", args)
			} else if err == nil {
				t.Errorf("xz %v: corrupted stream decoded without error", args)
			}
		}
	}
}
