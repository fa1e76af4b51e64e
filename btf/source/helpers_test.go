package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/cilium/ebpf/btf"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// sharedDir holds files that several tests use (kernel images of the
// imported packages); TestMain removes it.
var sharedDir string

func TestMain(m *testing.M) {
	var err error
	sharedDir, err = os.MkdirTemp("", "bpfarm-source-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(sharedDir)
	os.Exit(code)
}

var (
	debMu      sync.Mutex
	debKernels = map[string]*Kernel{}
)

// debKernel returns the kernel imported from the Debian package of series,
// importing it once per test binary. Its Image is kept in sharedDir.
func debKernel(t testing.TB, series string) *Kernel {
	t.Helper()
	deb := testenv.DebianKernel(t, series)
	debMu.Lock()
	defer debMu.Unlock()
	if k := debKernels[series]; k != nil {
		return k
	}
	k, err := importOne(deb, Options{TempDir: sharedDir, KeepImage: true})
	if err != nil {
		t.Fatal(err)
	}
	debKernels[series] = k
	return k
}

// shareDebKernel makes k, imported from the Debian package of series, the
// one debKernel returns, with a copy of its Image in sharedDir.
func shareDebKernel(series string, k *Kernel) error {
	debMu.Lock()
	defer debMu.Unlock()
	if debKernels[series] != nil {
		return nil
	}
	img, err := os.ReadFile(k.Image)
	if err != nil {
		return err
	}
	shared := *k
	shared.Image = filepath.Join(sharedDir, "vmlinuz-"+series)
	if err := os.WriteFile(shared.Image, img, 0o644); err != nil {
		return err
	}
	debKernels[series] = &shared
	return nil
}

// importOne imports path, which must hold one kernel.
func importOne(path string, opts Options) (*Kernel, error) {
	var got []*Kernel
	err := Import(context.Background(), path, opts, func(k *Kernel) error {
		got = append(got, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(got) != 1 {
		return nil, fmt.Errorf("import %s: got %d kernels, want 1", path, len(got))
	}
	return got[0], nil
}

// mustImportOne is importOne that fails the test on error.
func mustImportOne(t testing.TB, path string, opts Options) *Kernel {
	t.Helper()
	k, err := importOne(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// checkEmptyDir fails the test if dir has files left (temporary files that
// Import should have removed).
func checkEmptyDir(t testing.TB, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("temporary file left behind: %s", filepath.Join(dir, e.Name()))
	}
}

// loadSpec parses kernel BTF.
func loadSpec(t testing.TB, raw []byte) *btf.Spec {
	t.Helper()
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// checkStruct fails the test unless spec has a struct name with a member
// member.
func checkStruct(t testing.TB, spec *btf.Spec, name, member string) {
	t.Helper()
	var s *btf.Struct
	if err := spec.TypeByName(name, &s); err != nil {
		t.Fatalf("struct %s: %v", name, err)
	}
	for _, m := range s.Members {
		if m.Name == member {
			return
		}
	}
	t.Fatalf("struct %s has no member %s", name, member)
}

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarEntry is a file for makeTar.
type tarEntry struct {
	name string
	data []byte
	dir  bool
}

// makeTar returns a tar archive of entries.
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
		if e.dir {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// xzData compresses data with xz.
func xzData(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipData compresses data with gzip.
func gzipData(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// btfTarXZ returns a btfhub-archive file holding raw as RELEASE.btf.
func btfTarXZ(t testing.TB, release string, raw []byte) []byte {
	t.Helper()
	return xzData(t, makeTar(t, tarEntry{name: release + ".btf", data: raw}))
}

// arMemberData is a member for makeAr.
type arMemberData struct {
	name string
	data []byte
}

// makeAr returns an ar archive of members, as dpkg-deb writes it.
func makeAr(members ...arMemberData) []byte {
	var buf bytes.Buffer
	buf.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&buf, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, 1700000000, 0, 0, 0o100644, len(m.data))
		buf.Write(m.data)
		if len(m.data)%2 == 1 {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

// makeDeb returns a Debian package with the control file control and the
// files in data (tar entries, named ./PATH as dpkg-deb names them) in
// data.tar.xz.
func makeDeb(t testing.TB, control string, data ...tarEntry) []byte {
	t.Helper()
	return makeDebComp(t, "xz", control, data...)
}

// makeDebComp is makeDeb with data.tar compressed as comp, xz or gz.
func makeDebComp(t testing.TB, comp, control string, data ...tarEntry) []byte {
	t.Helper()
	tarball := makeTar(t, data...)
	switch comp {
	case "xz":
		tarball = xzData(t, tarball)
	case "gz":
		var buf bytes.Buffer
		w, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(tarball)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		tarball = buf.Bytes()
	default:
		t.Fatalf("compression %q", comp)
	}
	return makeAr(
		arMemberData{"debian-binary", []byte("2.0\n")},
		arMemberData{"control.tar.gz", gzipData(t, makeTar(t, tarEntry{name: "./", dir: true}, tarEntry{name: "./control", data: []byte(control)}))},
		arMemberData{"data.tar." + comp, tarball},
	)
}

// decompressVmlinux writes the vmlinux ELF inside the zstd-compressed
// bzImage at image to a file in dir, with the zstd package directly (not
// the code under test), and returns its path.
func decompressVmlinux(t testing.TB, image, dir string) string {
	t.Helper()
	data, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte{0x28, 0xb5, 0x2f, 0xfd})
	if i < 0 {
		t.Fatalf("%s: no zstd data", image)
	}
	d, err := zstd.NewReader(bytes.NewReader(data[i:]), zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p := filepath.Join(dir, "vmlinux")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The kernel's build appends the decompressed size to the zstd frame:
	// an error at the end is expected.
	_, copyErr := io.Copy(f, d)
	if ef, err := elf.Open(p); err != nil {
		t.Fatalf("decompress %s: %v (zstd: %v)", image, err, copyErr)
	} else {
		ef.Close()
	}
	return p
}

// checkFormatError checks that err is a one-line *FormatError naming path
// and containing want.
func checkFormatError(t testing.TB, err error, path, want string) {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FormatError", err, err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error has more than one line: %q", msg)
	}
	if !strings.HasPrefix(msg, "import "+path+": ") {
		t.Errorf("error %q does not start with %q", msg, "import "+path+": ")
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
}
