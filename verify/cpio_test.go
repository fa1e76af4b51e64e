package verify

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
)

// TestCPIOWithCpio: GNU cpio lists and extracts what CPIOWriter writes.
func TestCPIOWithCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		testenv.Require(t, "cpio", "make deps installs it")
	}
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Dir("dev", 0o755))
	must(c.Dir("bpfarm", 0o755))
	must(c.CharDev("dev/console", 0o600, 5, 1))
	for i, size := range []int{0, 1, 2, 3, 4, 5, 4097} {
		data := bytes.Repeat([]byte{byte('a' + i)}, size)
		must(c.File(filepath.Join("bpfarm", "f"+string(rune('0'+i))), 0o644, data))
	}
	must(c.FileFrom("init", 0o755, 5, strings.NewReader("hello")))
	must(c.Symlink("sbin", "bpfarm"))
	must(c.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	list := string(out)
	for _, want := range []string{"dev/console", "bpfarm/f6", "init", "sbin -> bpfarm", "crw-------"} {
		if !strings.Contains(list, want) {
			t.Errorf("cpio -t lacks %q:\n%s", want, list)
		}
	}

	dir := t.TempDir()
	cmd = exec.Command(cpio, "-id", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for i, size := range []int{0, 1, 2, 3, 4, 5, 4097} {
		b, err := os.ReadFile(filepath.Join(dir, "bpfarm", "f"+string(rune('0'+i))))
		if err != nil || len(b) != size || (size > 0 && b[0] != byte('a'+i)) {
			t.Errorf("f%d: %d bytes, %v", i, len(b), err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "init")); string(b) != "hello" {
		t.Errorf("init: %q", b)
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init mode: %v %v", st, err)
	}
}
