package bpfsrc

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"testing"
	"time"
)

// small are limits tight enough to hit in tests.
var small = Limits{MaxTotalSize: 1024, MaxFiles: 4, MaxFileSize: 512, MaxPathLen: 64, MaxDepth: 3}

// ent is one entry of a test archive; raw, if set, is written verbatim
// instead (for entries archive/tar refuses to write).
type ent struct {
	hdr  tar.Header
	data string
	raw  []byte
}

func reg(name, data string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}, data: data}
}

func dir(name string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func typed(typ byte, name string) ent {
	return ent{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: "target", Mode: 0o644}}
}

func raw(b []byte) ent { return ent{raw: b} }

// makeTar builds an uncompressed tar archive.
func makeTar(t testing.TB, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if e.raw != nil {
			if err := tw.Flush(); err != nil {
				t.Fatal(err)
			}
			buf.Write(e.raw)
			continue
		}
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("write header %q: %v", hdr.Name, err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawHeader builds a ustar header block by hand, for names and types
// archive/tar refuses to write.
func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	fixChecksum(b)
	return b
}

// fixChecksum recomputes the checksum of the tar header block b.
func fixChecksum(b []byte) {
	copy(b[148:156], "        ")
	var sum int
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// padBlock pads b with zeros to a multiple of 512 bytes.
func padBlock(b []byte) []byte {
	if n := len(b) % 512; n != 0 {
		b = append(b, make([]byte, 512-n)...)
	}
	return b
}

// paxEntry builds a PAX extended header ('x') with the given records
// followed by a regular file header and its data.
func paxEntry(records map[string]string, name, data string) []byte {
	var recs strings.Builder
	for k, v := range records {
		body := " " + k + "=" + v + "\n"
		n := len(body) + 1
		for len(strconv.Itoa(n))+len(body) != n {
			n++
		}
		recs.WriteString(strconv.Itoa(n) + body)
	}
	var out []byte
	out = append(out, rawHeader("PaxHeaders/"+name, 'x', int64(recs.Len()))...)
	out = append(out, padBlock([]byte(recs.String()))...)
	out = append(out, rawHeader(name, '0', int64(len(data)))...)
	out = append(out, padBlock([]byte(data))...)
	return out
}

// gzipBomb returns a valid gzip stream of size zero bytes, built without
// compressing them all: one compressed megabyte of zeros, repeated.
func gzipBomb(t testing.TB, size int64) []byte {
	t.Helper()
	const chunk = 1 << 20
	var block bytes.Buffer
	fw, err := flate.NewWriter(&block, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, chunk)
	fw.Write(zeros)
	fw.Flush() // ends the blocks on a byte boundary, with no final block
	var out bytes.Buffer
	out.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	crc := crc32.NewIEEE()
	for n := int64(0); n < size; n += chunk {
		out.Write(block.Bytes())
		crc.Write(zeros)
	}
	out.Write([]byte{0x03, 0x00}) // an empty final block
	binary.Write(&out, binary.LittleEndian, crc.Sum32())
	binary.Write(&out, binary.LittleEndian, uint32(size))
	return out.Bytes()
}

// cycleReader repeats data forever.
type cycleReader struct {
	data []byte
	off  int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m := copy(p[n:], c.data[c.off:])
		n += m
		c.off = (c.off + m) % len(c.data)
	}
	return n, nil
}

// errReader fails every read.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

var errBoom = errors.New("boom")

// mustInvalid checks that err is an *InvalidError with the given path whose
// reason contains reason, and that its message is one line.
func mustInvalid(t testing.TB, err error, path, reason string) *InvalidError {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q: ...%s...", path, reason)
	}
	ie, ok := errors.AsType[*InvalidError](err)
	if !ok {
		t.Fatalf("got %T %v, want *InvalidError", err, err)
	}
	if ie.Path != path || !strings.Contains(ie.Reason, reason) {
		t.Fatalf("got %v (path %q, reason %q), want path %q, reason containing %q", err, ie.Path, ie.Reason, path, reason)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("message is not one line: %q", err.Error())
	}
	return ie
}

var epoch = time.Unix(0, 0)
