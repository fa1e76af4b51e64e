package bpfsrc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestReadTarRules(t *testing.T) {
	const prog = "char LICENSE[] = \"GPL\";\n"
	big := strings.Repeat("x", 513)
	long := strings.Repeat("x", 70) + ".h"

	tests := []struct {
		name    string
		entries []ent
		entry   string
		path    string // "" with reason "" means: accepted
		reason  string
	}{
		{name: "ok", entries: []ent{reg("a.bpf.c", prog), reg("inc/a.h", "")}},
		{name: "dot slash stripped", entries: []ent{reg("./a.bpf.c", prog), reg("././inc/a.h", "")}},
		{name: "directories ignored", entries: []ent{dir("./"), dir("inc/"), reg("inc/a.bpf.c", prog), dir("empty/")}},
		{name: "old regular type", entries: []ent{{hdr: tar.Header{Typeflag: tar.TypeRegA, Name: "a.bpf.c", Size: 1}, data: "x"}}},
		{name: "explicit entry", entries: []ent{reg("a.bpf.c", prog), reg("b.bpf.c", prog)}, entry: "./b.bpf.c"},
		{name: "entry .c", entries: []ent{reg("main.c", prog)}, entry: "main.c"},

		{name: "symlink", entries: []ent{reg("a.bpf.c", prog), typed(tar.TypeSymlink, "a.h")}, path: "a.h", reason: "symbolic link (tar type '2') not allowed"},
		{name: "hard link", entries: []ent{reg("a.bpf.c", prog), typed(tar.TypeLink, "a.h")}, path: "a.h", reason: "hard link (tar type '1')"},
		{name: "char device", entries: []ent{typed(tar.TypeChar, "null")}, path: "null", reason: "character device (tar type '3')"},
		{name: "block device", entries: []ent{typed(tar.TypeBlock, "sda")}, path: "sda", reason: "block device (tar type '4')"},
		{name: "fifo", entries: []ent{typed(tar.TypeFifo, "pipe")}, path: "pipe", reason: "fifo (tar type '6')"},
		{name: "contiguous", entries: []ent{raw(rawHeader("a.bpf.c", '7', 0))}, path: "a.bpf.c", reason: "contiguous file (tar type '7')"},
		{name: "pax global", entries: []ent{{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "hi"}}}}, path: "g", reason: "PAX global header (tar type 'g')"},
		{name: "gnu volume", entries: []ent{raw(rawHeader("vol", 'V', 0))}, path: "vol", reason: "GNU volume header"},
		{name: "unknown type", entries: []ent{raw(rawHeader("odd", 'Z', 0))}, path: "odd", reason: "unknown entry type (tar type 'Z')"},
		{name: "pax sparse", entries: []ent{raw(paxEntry(map[string]string{"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.size": "1", "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,1"}, "s.bpf.c", "x"))}, path: "s.bpf.c", reason: "GNU sparse file (PAX)"},
		{name: "pax sparse unknown", entries: []ent{raw(paxEntry(map[string]string{"GNU.sparse.major": "7"}, "s.bpf.c", "x"))}, path: "s.bpf.c", reason: "GNU sparse file (PAX)"},

		{name: "parent", entries: []ent{reg("../x.h", "")}, path: "../x.h", reason: "path escapes the bundle root"},
		{name: "dot slash parent", entries: []ent{reg("./../x.h", "")}, path: "./../x.h", reason: "path escapes the bundle root"},
		{name: "absolute", entries: []ent{reg("/etc/passwd", "")}, path: "/etc/passwd", reason: "path is absolute"},
		{name: "dot slash absolute", entries: []ent{reg(".//etc/passwd", "")}, path: ".//etc/passwd", reason: "path is absolute"},
		{name: "escape through dir", entries: []ent{reg("a/../../b", "")}, path: "a/../../b", reason: "path escapes the bundle root"},
		{name: "inner dotdot", entries: []ent{reg("a/../b.h", "")}, path: "a/../b.h", reason: `".." component`},
		{name: "dir escapes", entries: []ent{dir("../up/"), reg("a.bpf.c", prog)}, path: "../up/", reason: "path escapes the bundle root"},
		{name: "inner dot", entries: []ent{reg("a/./b.h", "")}, path: "a/./b.h", reason: `"." component`},
		{name: "dot", entries: []ent{reg(".", "")}, path: ".", reason: `"." component`},
		{name: "double slash", entries: []ent{reg("a//b.h", "")}, path: "a//b.h", reason: "empty component"},
		{name: "trailing slash file", entries: []ent{raw(rawHeader("a.h/", '0', 0))}, path: "a.h/", reason: "ends in a slash"},
		{name: "drive letter", entries: []ent{reg("C:/x.h", "")}, path: "C:/x.h", reason: "drive letter"},
		{name: "drive relative", entries: []ent{reg("c:x.h", "")}, path: "c:x.h", reason: "drive letter"},
		{name: "backslash", entries: []ent{reg(`..\x.h`, "")}, path: `..\x.h`, reason: "backslash"},
		{name: "newline", entries: []ent{reg("a\nb.h", "")}, path: "a\nb.h", reason: "control character"},
		{name: "escape char", entries: []ent{reg("a\x1b[31m.h", "")}, path: "a\x1b[31m.h", reason: "control character"},
		{name: "not utf8", entries: []ent{raw(rawHeader("a\xff.h", '0', 0))}, path: "a\xff.h", reason: "UTF-8"},
		{name: "dash", entries: []ent{reg("-fplugin=x.bpf.c", prog)}, path: "-fplugin=x.bpf.c", reason: `starts with "-"`},
		{name: "long", entries: []ent{reg(long, "")}, path: long, reason: "bytes long; the limit is 64"},
		{name: "deep", entries: []ent{reg("a/b/c/d/x.h", "")}, path: "a/b/c/d/x.h", reason: "4 directories deep; the limit is 3"},
		{name: "duplicate", entries: []ent{reg("a.bpf.c", prog), reg("a.bpf.c", prog)}, path: "a.bpf.c", reason: "duplicate file"},
		{name: "duplicate after cleaning", entries: []ent{reg("a.bpf.c", prog), reg("./a.bpf.c", prog)}, path: "./a.bpf.c", reason: `duplicate file (same as "a.bpf.c")`},
		{name: "file and dir", entries: []ent{reg("a", ""), reg("a/b.bpf.c", prog)}, path: "a/b.bpf.c", reason: `needs "a" to be a directory`},
		{name: "oversize file", entries: []ent{reg("a.bpf.c", big)}, path: "a.bpf.c", reason: "file is 513 bytes; the limit is 512"},
		{name: "too many files", entries: []ent{reg("a.bpf.c", ""), reg("b", ""), reg("c", ""), reg("d", ""), reg("e", "")}, path: "e", reason: "more than 4 files"},
		{name: "total size", entries: []ent{reg("a.bpf.c", big[:500]), reg("b", big[:500]), reg("c", big[:500])}, path: "c", reason: "exceeds 1024 bytes in total"},

		{name: "no entry", entries: []ent{reg("a.c", prog), reg("a.h", "")}, reason: "no *.bpf.c file"},
		{name: "two entries", entries: []ent{reg("a.bpf.c", prog), reg("b/b.bpf.c", prog)}, reason: `2 *.bpf.c files ("a.bpf.c", "b/b.bpf.c"); name the entry file`},
		{name: "entry missing", entries: []ent{reg("a.bpf.c", prog)}, entry: "b.bpf.c", path: "b.bpf.c", reason: "entry file is not in the bundle"},
		{name: "entry not C", entries: []ent{reg("a.bpf.c", prog), reg("a.h", "")}, entry: "a.h", path: "a.h", reason: "entry must be a .bpf.c or .c file"},
		{name: "entry escapes", entries: []ent{reg("a.bpf.c", prog)}, entry: "../a.bpf.c", path: "../a.bpf.c", reason: "entry: path escapes the bundle root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := makeTar(t, tt.entries...)
			for _, compressed := range []bool{false, true} {
				var b *Bundle
				var err error
				if compressed {
					b, err = ReadTarGz(bytes.NewReader(gz(t, data)), tt.entry, small)
				} else {
					b, err = ReadTar(bytes.NewReader(data), tt.entry, small)
				}
				if tt.path == "" && tt.reason == "" {
					if err != nil {
						t.Fatalf("compressed=%v: %v", compressed, err)
					}
					checkValid(t, b, small)
					continue
				}
				mustInvalid(t, err, tt.path, tt.reason)
			}
		})
	}
}

// checkValid checks that b satisfies every rule New enforces.
func checkValid(t testing.TB, b *Bundle, lim Limits) {
	t.Helper()
	b2, err := New(b.Entry, b.Files, lim)
	if err != nil {
		t.Fatalf("accepted bundle does not re-validate: %v", err)
	}
	if b2.Digest() != b.Digest() || b2.Entry != b.Entry {
		t.Fatalf("re-validated bundle differs")
	}
	for i := 1; i < len(b.Files); i++ {
		if b.Files[i-1].Name >= b.Files[i].Name {
			t.Fatalf("files not sorted: %q, %q", b.Files[i-1].Name, b.Files[i].Name)
		}
	}
}

func TestMessage(t *testing.T) {
	_, err := ReadTar(bytes.NewReader(makeTar(t, reg("../x.h", ""))), "", Limits{})
	if got, want := err.Error(), `bundle: "../x.h": path escapes the bundle root`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = New("", nil, Limits{})
	if got, want := err.Error(), "bundle: no *.bpf.c file in the bundle; name the entry file"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = New("", []File{{Name: "a\x00b", Data: nil}}, Limits{})
	if got, want := err.Error(), `bundle: "a\x00b": path contains a NUL or control character`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLongPathMessage(t *testing.T) {
	name := strings.Repeat("x", 1<<20) + ".bpf.c"
	_, err := New("", []File{{Name: name}}, Limits{})
	ie := mustInvalid(t, err, name, "path is 1048582 bytes long; the limit is 256")
	if n := len(ie.Error()); n > 400 {
		t.Errorf("message is %d bytes long", n)
	}
}

func TestNewRules(t *testing.T) {
	tests := []struct {
		name   string
		files  []File
		entry  string
		path   string
		reason string
	}{
		{name: "NUL", files: []File{{Name: "a\x00.bpf.c"}}, path: "a\x00.bpf.c", reason: "NUL"},
		{name: "empty name", files: []File{{Name: ""}}, path: "", reason: "empty path"},
		{name: "too many", files: []File{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e"}}, reason: "holds 5 files; the limit is 4"},
		{name: "oversize", files: []File{{Name: "a.bpf.c", Data: make([]byte, 513)}}, path: "a.bpf.c", reason: "file is 513 bytes"},
		{name: "total", files: []File{{Name: "a.bpf.c", Data: make([]byte, 512)}, {Name: "b", Data: make([]byte, 512)}, {Name: "c", Data: make([]byte, 1)}}, path: "c", reason: "exceeds 1024 bytes in total"},
		{name: "duplicate", files: []File{{Name: "a.bpf.c"}, {Name: "./a.bpf.c"}}, path: "./a.bpf.c", reason: "duplicate"},
		{name: "many entries", files: []File{{Name: "a.bpf.c"}, {Name: "b.bpf.c"}, {Name: "c.bpf.c"}, {Name: "d.bpf.c"}}, reason: `4 *.bpf.c files ("a.bpf.c", "b.bpf.c", "c.bpf.c", "d.bpf.c")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.entry, tt.files, small)
			mustInvalid(t, err, tt.path, tt.reason)
		})
	}

	var files []File
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		files = append(files, File{Name: n + ".bpf.c"})
	}
	_, err := New("", files, Limits{})
	mustInvalid(t, err, "", `7 *.bpf.c files ("a.bpf.c", "b.bpf.c", "c.bpf.c", "d.bpf.c", "e.bpf.c" and 2 more)`)
}

func TestNewCopiesAndSorts(t *testing.T) {
	files := []File{{Name: "./z.h", Data: []byte("z")}, {Name: "a.bpf.c", Data: []byte("a")}}
	b, err := New("", files, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if files[0].Name != "./z.h" {
		t.Error("New modified its argument")
	}
	if b.Entry != "a.bpf.c" || len(b.Files) != 2 || b.Files[0].Name != "a.bpf.c" || b.Files[1].Name != "z.h" {
		t.Errorf("got %+v", b)
	}
	if d, ok := b.File("z.h"); !ok || string(d) != "z" {
		t.Errorf("File(z.h) = %q, %v", d, ok)
	}
	if _, ok := b.File("./z.h"); ok {
		t.Error("File(./z.h) found")
	}
	if b.Size() != 2 {
		t.Errorf("Size = %d", b.Size())
	}
}

func TestLimitsDefaults(t *testing.T) {
	if got := (Limits{}).withDefaults(); got != DefaultLimits {
		t.Errorf("zero limits = %+v", got)
	}
	if got := (Limits{MaxFiles: -1, MaxDepth: 2}).withDefaults(); got.MaxFiles != DefaultLimits.MaxFiles || got.MaxDepth != 2 {
		t.Errorf("got %+v", got)
	}
}

// TestNULInArchive checks an archive whose PAX header gives a name holding a NUL.
func TestNULInArchive(t *testing.T) {
	data := paxEntry(map[string]string{"path": "a\x00.bpf.c"}, "a.bpf.c", "x")
	_, err := ReadTar(bytes.NewReader(append(data, make([]byte, 1024)...)), "", Limits{})
	ie := mustInvalid(t, err, "", "malformed tar archive")
	if !errors.Is(ie, tar.ErrHeader) {
		t.Errorf("%v does not wrap tar.ErrHeader", err)
	}
}

func TestGNUSparse(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "s.bpf.c", Format: tar.FormatGNU, Size: 0}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	b := buf.Bytes()
	b[156] = tar.TypeGNUSparse
	fixChecksum(b)
	_, err := ReadTar(bytes.NewReader(b), "", Limits{})
	mustInvalid(t, err, "s.bpf.c", "GNU sparse file (tar type 'S')")
}

func TestStreams(t *testing.T) {
	good := gz(t, makeTar(t, reg("a.bpf.c", "int x;\n"), reg("a.h", strings.Repeat("y", 4000))))
	if _, err := ReadTarGz(bytes.NewReader(good), "", Limits{}); err != nil {
		t.Fatal(err)
	}

	t.Run("not gzip", func(t *testing.T) {
		_, err := ReadTarGz(bytes.NewReader(makeTar(t, reg("a.bpf.c", ""))), "", Limits{})
		mustInvalid(t, err, "", "not a gzip stream")
	})
	t.Run("empty", func(t *testing.T) {
		_, err := ReadTarGz(bytes.NewReader(nil), "", Limits{})
		mustInvalid(t, err, "", "not a gzip stream")
	})
	t.Run("truncated gzip", func(t *testing.T) {
		_, err := ReadTarGz(bytes.NewReader(good[:len(good)/2]), "", Limits{})
		mustInvalid(t, err, "", "truncated gzip stream")
	})
	t.Run("gzip without trailer", func(t *testing.T) {
		_, err := ReadTarGz(bytes.NewReader(good[:len(good)-4]), "", Limits{})
		mustInvalid(t, err, "", "truncated gzip stream")
	})
	t.Run("bad checksum", func(t *testing.T) {
		bad := bytes.Clone(good)
		bad[len(bad)-8] ^= 1
		_, err := ReadTarGz(bytes.NewReader(bad), "", Limits{})
		ie := mustInvalid(t, err, "", "malformed gzip stream")
		if !errors.Is(ie, gzip.ErrChecksum) {
			t.Errorf("%v does not wrap gzip.ErrChecksum", err)
		}
	})
	t.Run("corrupt deflate", func(t *testing.T) {
		bad := bytes.Clone(good)
		for i := 12; i < 40; i++ {
			bad[i] = 0xff
		}
		_, err := ReadTarGz(bytes.NewReader(bad), "", Limits{})
		mustInvalid(t, err, "", "gzip stream")
	})
	t.Run("truncated tar in complete gzip", func(t *testing.T) {
		tr := makeTar(t, reg("a.bpf.c", strings.Repeat("x", 2000)))
		_, err := ReadTarGz(bytes.NewReader(gz(t, tr[:1000])), "", Limits{})
		mustInvalid(t, err, "", "truncated tar archive")
	})
	t.Run("truncated tar", func(t *testing.T) {
		tr := makeTar(t, reg("a.bpf.c", strings.Repeat("x", 2000)))
		_, err := ReadTar(bytes.NewReader(tr[:1000]), "", Limits{})
		mustInvalid(t, err, "", "truncated tar archive")
	})
	t.Run("garbage tar", func(t *testing.T) {
		_, err := ReadTar(strings.NewReader(strings.Repeat("garbage!", 128)), "", Limits{})
		mustInvalid(t, err, "", "malformed tar archive")
	})
	t.Run("read error", func(t *testing.T) {
		_, err := ReadTarGz(io.MultiReader(bytes.NewReader(good[:30]), errReader{errBoom}), "", Limits{})
		if !errors.Is(err, errBoom) {
			t.Fatalf("got %v, want %v", err, errBoom)
		}
		if _, ok := errors.AsType[*InvalidError](err); ok {
			t.Fatalf("I/O error reported as invalid bundle: %v", err)
		}
		_, err = ReadTar(errReader{errBoom}, "", Limits{})
		if !errors.Is(err, errBoom) {
			t.Fatalf("got %v, want %v", err, errBoom)
		}
	})
	t.Run("oversize file refused from its header", func(t *testing.T) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big.bpf.c", Size: 1 << 40})
		// No contents follow: reading them would hit errBoom.
		_, err := ReadTar(io.MultiReader(&buf, errReader{errBoom}), "", Limits{})
		mustInvalid(t, err, "big.bpf.c", "file is 1099511627776 bytes; the limit is 8388608")
	})
	t.Run("endless directories", func(t *testing.T) {
		_, err := ReadTar(&cycleReader{data: rawHeader("d/", tar.TypeDir, 0)}, "", small)
		mustInvalid(t, err, "", "archive holds more than 16 entries")
	})
	t.Run("endless empty gzip members", func(t *testing.T) {
		member := gz(t, nil)
		_, err := ReadTarGz(&cycleReader{data: member}, "", small)
		mustInvalid(t, err, "", "compressed archive is larger than")
	})
	t.Run("endless empty deflate blocks", func(t *testing.T) {
		emptyStored := []byte{0, 0, 0, 0xff, 0xff}
		_, err := ReadTarGz(io.MultiReader(bytes.NewReader(gzipHeader), &cycleReader{data: emptyStored}), "", small)
		mustInvalid(t, err, "", "compressed archive is larger than")
	})
}

// gzipHeader starts a gzip stream.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

func TestGzipBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 1 MiB bomb")
	}
	bomb := gzipBomb(t, 1<<30)
	t.Logf("1 GiB of zeros in %d bytes of gzip", len(bomb))

	// The bomb is valid gzip: a few megabytes of it decompress fine.
	zr, err := gzip.NewReader(bytes.NewReader(bomb))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.CopyN(io.Discard, zr, 8<<20); n != 8<<20 || err != nil {
		t.Fatalf("bomb does not decompress: %d, %v", n, err)
	}

	for _, name := range []string{"zeros", "file then zeros"} {
		t.Run(name, func(t *testing.T) {
			in := io.Reader(bytes.NewReader(bomb))
			if name == "file then zeros" {
				// A valid tar prefix, made into its own gzip member.
				in = io.MultiReader(bytes.NewReader(gz(t, makeTar(t, reg("a.bpf.c", "x"))[:1024])), in)
			}
			counter := &countReader{r: in}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := ReadTarGz(counter, "", Limits{})
			runtime.ReadMemStats(&after)
			mustInvalid(t, err, "", "archive is larger than")
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Errorf("allocated %d bytes reading the bomb", alloc)
			}
			if counter.n > int64(len(bomb))/8 {
				t.Errorf("read %d of %d compressed bytes", counter.n, len(bomb))
			}
		})
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestDigestStable(t *testing.T) {
	const prog = "#include \"a.h\"\nint x;\n"
	one := makeTar(t,
		reg("prog.bpf.c", prog),
		reg("inc/a.h", "#define A 1\n"),
		reg("inc/b.h", ""),
	)
	other := makeTar(t,
		dir("./"),
		dir("./inc/"),
		ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./inc/b.h", Mode: 0o600, Uid: 1000, Gid: 1000, Uname: "alice", Gname: "staff", ModTime: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}},
		ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./inc/a.h", Mode: 0o755, Uid: 42, ModTime: time.Now(), Size: 12, Format: tar.FormatPAX}, data: "#define A 1\n"},
		ent{hdr: tar.Header{Typeflag: tar.TypeRegA, Name: "prog.bpf.c", Uname: "root", Size: int64(len(prog)), ModTime: time.Unix(1e9, 0)}, data: prog},
	)
	b1, err := ReadTar(bytes.NewReader(one), "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := ReadTarGz(bytes.NewReader(gz(t, other)), "prog.bpf.c", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b1.Digest() != b2.Digest() {
		t.Fatalf("same sources, different digests: %s, %s", b1.Digest(), b2.Digest())
	}

	// The canonical form, spelled out.
	var canon bytes.Buffer
	canon.WriteString("inc/a.h\x0012\x00#define A 1\n")
	canon.WriteString("inc/b.h\x000\x00")
	canon.WriteString("prog.bpf.c\x0022\x00" + prog)
	canon.WriteString("\x01entry\x00prog.bpf.c")
	sum := sha256.Sum256(canon.Bytes())
	if got, want := b1.Digest(), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("Digest = %s, canonical form hashes to %s", got, want)
	}
	// A stable external id: this value must never change.
	if got, want := b1.Digest(), "8f0e69fe497e32f1fec09e14055d02ca9857daadc3eb4fcc63a66ca6145322ff"; got != want {
		t.Errorf("golden digest: got %s, want %s", got, want)
	}

	changed := func(what string, files []File, entry string) {
		t.Helper()
		b, err := New(entry, files, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if b.Digest() == b1.Digest() {
			t.Errorf("%s: digest did not change", what)
		}
	}
	base := func() []File {
		var files []File
		for _, f := range b1.Files {
			files = append(files, File{Name: f.Name, Data: bytes.Clone(f.Data)})
		}
		return files
	}
	files := base()
	files[2].Data[0] ^= 1
	changed("one byte", files, "")
	files = base()
	files[1].Name = "inc/c.h"
	changed("a name", files, "")
	files = base()
	files = append(files, File{Name: "inc/d.h"})
	changed("an empty file added", files, "")
	files = base()
	files = append(files, File{Name: "other.c", Data: []byte("int y;")})
	changed("the entry", files, "other.c")
	// Moving bytes between a name and the contents must change the digest.
	changed("boundary", []File{{Name: "prog.bpf.c", Data: []byte("inc/a.h")}}, "")
}

func TestWriteTarGz(t *testing.T) {
	files := []File{
		{Name: "prog.bpf.c", Data: []byte("int x;\n")},
		{Name: "inc/a.h", Data: []byte("#define A 1\n")},
		{Name: strings.Repeat("long/", 30) + "name-beyond-ustar.h", Data: []byte("x")},
		{Name: "ünïcode.h", Data: nil},
	}
	lim := Limits{MaxPathLen: 256, MaxDepth: 32}
	b1, err := New("", files, lim)
	if err != nil {
		t.Fatal(err)
	}
	rev := append([]File(nil), files...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	b2, err := New("prog.bpf.c", rev, lim)
	if err != nil {
		t.Fatal(err)
	}

	var out1, out2 bytes.Buffer
	if err := b1.WriteTarGz(&out1); err != nil {
		t.Fatal(err)
	}
	if err := b2.WriteTarGz(&out2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out1.Bytes(), out2.Bytes()) {
		t.Fatal("same bundle, different archives")
	}

	back, err := ReadTarGz(bytes.NewReader(out1.Bytes()), b1.Entry, lim)
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != b1.Digest() {
		t.Fatal("round trip changed the digest")
	}
	var again bytes.Buffer
	if err := back.WriteTarGz(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), out1.Bytes()) {
		t.Fatal("round trip changed the archive")
	}

	zr, err := gzip.NewReader(&out1)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() || zr.Comment != "" {
		t.Errorf("gzip header %+v", zr.Header)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Gid != 0 ||
			hdr.Uname != "" || hdr.Gname != "" || !hdr.ModTime.Equal(epoch) {
			t.Errorf("header %+v", hdr)
		}
	}
	if len(names) != 4 || names[0] != "inc/a.h" || names[3] != "ünïcode.h" {
		t.Errorf("names %q", names)
	}
}

func TestExtract(t *testing.T) {
	b, err := New("", []File{
		{Name: "prog.bpf.c", Data: []byte("int x;\n")},
		{Name: "inc/a.h", Data: []byte("A")},
		{Name: "inc/sub/b.h", Data: []byte("B")},
	}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := b.Extract(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range b.Files {
		got, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("%s: %q, %v", f.Name, got, err)
		}
		fi, err := os.Lstat(filepath.Join(dir, f.Name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&^0o644 != 0 {
			t.Errorf("%s: %v, %v", f.Name, fi.Mode(), err)
		}
	}

	t.Run("not empty", func(t *testing.T) {
		if err := b.Extract(dir); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("symlink in dir", func(t *testing.T) {
		d := t.TempDir()
		outside := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(d, "inc")); err != nil {
			t.Fatal(err)
		}
		if err := b.Extract(d); err == nil {
			t.Fatal("extracted into a directory holding a symlink")
		}
		assertEmpty(t, outside)
	})
	t.Run("missing dir", func(t *testing.T) {
		if err := b.Extract(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("extracted into a missing directory")
		}
	})
	for _, name := range []string{"../escape.h", "/tmp/abs.h", "a/../../escape.h", "./a.h", "a//b.h"} {
		t.Run("literal "+name, func(t *testing.T) {
			parent := t.TempDir()
			d := filepath.Join(parent, "x", "y")
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			evil := &Bundle{Entry: "p.bpf.c", Files: []File{{Name: name, Data: []byte("evil")}, {Name: "p.bpf.c"}}}
			err := evil.Extract(d)
			if _, ok := errors.AsType[*InvalidError](err); !ok {
				t.Fatalf("got %v, want *InvalidError", err)
			}
			assertEmpty(t, d)
			if _, err := os.Stat(filepath.Join(parent, "x", "escape.h")); err == nil {
				t.Fatal("wrote outside the directory")
			}
		})
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("%s holds %d entries", dir, len(ents))
	}
}
