package bpfsrc

import (
	"archive/tar"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzReadTar checks that no input makes ReadTar panic, that every refusal
// is a one-line *InvalidError (the input is in memory, so there are no I/O
// errors), and that every accepted bundle re-validates and survives a round
// trip through WriteTarGz.
func FuzzReadTar(f *testing.F) {
	const prog = "#include \"a.h\"\nint x;\n"
	seeds := [][]byte{
		makeTar(f, reg("a.bpf.c", prog)),
		makeTar(f, dir("./"), dir("inc/"), reg("./a.bpf.c", prog), reg("inc/a.h", "#define A\n")),
		makeTar(f, reg("a.bpf.c", prog), reg("b.bpf.c", prog)),
		makeTar(f, reg("a.bpf.c", prog), typed(tar.TypeSymlink, "a.h")),
		makeTar(f, reg("../x.h", ""), reg("a.bpf.c", "")),
		makeTar(f, ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("n/", 60) + "a.bpf.c", Size: 1, Format: tar.FormatPAX}, data: "x"}),
		append(paxEntry(map[string]string{"path": "a.bpf.c", "mtime": "1.5"}, "x", "int y;"), make([]byte, 1024)...),
		append(rawHeader("a\xff.bpf.c", '0', 0), make([]byte, 1024)...),
		nil,
		make([]byte, 1024),
	}
	for _, s := range seeds {
		f.Add(s, "")
	}
	f.Add(seeds[2], "b.bpf.c")
	f.Fuzz(func(t *testing.T, data []byte, entry string) {
		b, err := ReadTar(bytes.NewReader(data), entry, small)
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("not an *InvalidError: %T %v", err, err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("message is not one line: %q", err.Error())
			}
			return
		}
		checkValid(t, b, small)
		if b.Size() > small.MaxTotalSize || len(b.Files) > small.MaxFiles {
			t.Fatalf("limits exceeded: %d bytes, %d files", b.Size(), len(b.Files))
		}
		var buf bytes.Buffer
		if err := b.WriteTarGz(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := ReadTarGz(&buf, b.Entry, small)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if back.Digest() != b.Digest() {
			t.Fatal("round trip changed the digest")
		}
	})
}
