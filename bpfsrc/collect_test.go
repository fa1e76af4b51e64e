package bpfsrc

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func names(b *Bundle) []string {
	var n []string
	for _, f := range b.Files {
		n = append(n, f.Name)
	}
	return n
}

func TestCollectFile(t *testing.T) {
	b, err := Collect(filepath.Join("testdata", "collect", "prog", "xdp.bpf.c"), "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// common.h is included as "../common.h", so the root moves up one level
	// and the entry keeps its place below it. Farm headers (vmlinux.h,
	// bpf/*.h, linux/*.h), commented-out includes (ghost.h), macro includes
	// (unused.h) and files never included (other.bpf.c) are left out.
	want := []string{
		"common.h",
		"prog/blob.bin",
		"prog/cont.h",
		"prog/inc/a.h",
		"prog/inc/b.h",
		"prog/maps.h",
		"prog/util.h",
		"prog/xdp.bpf.c",
	}
	if got := names(b); !reflect.DeepEqual(got, want) {
		t.Errorf("files:\n got %q\nwant %q", got, want)
	}
	if b.Entry != "prog/xdp.bpf.c" {
		t.Errorf("entry %q", b.Entry)
	}
	data, _ := os.ReadFile(filepath.Join("testdata", "collect", "common.h"))
	if got, _ := b.File("common.h"); string(got) != string(data) {
		t.Errorf("common.h = %q", got)
	}

	// The same bundle from an absolute path, or from another working
	// directory.
	abs, err := filepath.Abs(filepath.Join("testdata", "collect", "prog", "xdp.bpf.c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	b2, err := Collect(abs, "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b2.Digest() != b.Digest() {
		t.Error("digest depends on how the path was named")
	}
}

func TestCollectFileNoParent(t *testing.T) {
	// Without a header above it, the root is the entry's directory.
	dir := writeTree(t, map[string]string{
		"p.bpf.c":   "#include \"a.h\"\n#include \"p.bpf.c\"\n",
		"a.h":       "#include \"a.h\"\n#include \"sub/b.h\"\n",
		"sub/b.h":   "#include \"../a.h\"\n#include \"c.h\"\n",
		"sub/c.h":   "#include <a.h>\n",
		"other.h":   "",
		"sub/x.txt": "",
	})
	b, err := Collect(filepath.Join(dir, "p.bpf.c"), "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(b), []string{"a.h", "p.bpf.c", "sub/b.h", "sub/c.h"}; !reflect.DeepEqual(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}
	if b.Entry != "p.bpf.c" {
		t.Errorf("entry %q", b.Entry)
	}
}

func TestCollectFileSymlink(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"prog/p.bpf.c":     "#include \"link.h\"\n",
		"elsewhere/real.h": "#define REAL 1\n",
	})
	if err := os.Symlink(filepath.Join(dir, "elsewhere", "real.h"), filepath.Join(dir, "prog", "link.h")); err != nil {
		t.Fatal(err)
	}
	b, err := Collect(filepath.Join(dir, "prog", "p.bpf.c"), "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := b.File("link.h"); !ok || string(got) != "#define REAL 1\n" {
		t.Errorf("link.h = %q, %v (files %q)", got, ok, names(b))
	}
}

func TestCollectFileLimits(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"p.bpf.c": "#include \"a.h\"\n#include \"b.h\"\n#include \"c.h\"\n#include \"d.h\"\n",
		"a.h":     "", "b.h": "", "c.h": "", "d.h": "",
		"big.bpf.c": strings.Repeat("x", 600),
	})
	_, err := Collect(filepath.Join(dir, "p.bpf.c"), "", small)
	if ie, ok := errors.AsType[*InvalidError](err); !ok || !strings.Contains(ie.Reason, "more than 4 files") {
		t.Errorf("got %v", err)
	}
	_, err = Collect(filepath.Join(dir, "big.bpf.c"), "", small)
	if ie, ok := errors.AsType[*InvalidError](err); !ok || !strings.Contains(ie.Reason, "file is 600 bytes") {
		t.Errorf("got %v", err)
	}
}

func TestCollectErrors(t *testing.T) {
	dir := writeTree(t, map[string]string{"p.bpf.c": "", "notes.txt": "", "empty/x.txt": ""})
	if _, err := Collect(filepath.Join(dir, "p.bpf.c"), "p.bpf.c", Limits{}); err == nil {
		t.Error("entry accepted with a file")
	}
	if _, err := Collect(filepath.Join(dir, "missing.bpf.c"), "", Limits{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v", err)
	}
	_, err := Collect(filepath.Join(dir, "notes.txt"), "", Limits{})
	mustInvalid(t, err, "notes.txt", "entry must be a .bpf.c or .c file")
	_, err = Collect(filepath.Join(dir, "empty"), "", Limits{})
	mustInvalid(t, err, "", "no *.bpf.c file")
}

func TestCollectDir(t *testing.T) {
	prog := filepath.Join("testdata", "collect", "prog")
	_, err := Collect(prog, "", Limits{})
	mustInvalid(t, err, "", `2 *.bpf.c files ("other.bpf.c", "xdp.bpf.c")`)

	b, err := Collect(prog, "xdp.bpf.c", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cont.h", "ghost.h", "inc/a.h", "inc/b.h", "maps.h", "other.bpf.c", "unused.h", "util.h", "xdp.bpf.c"}
	if got := names(b); !reflect.DeepEqual(got, want) {
		t.Errorf("files:\n got %q\nwant %q", got, want)
	}
	if b.Entry != "xdp.bpf.c" {
		t.Errorf("entry %q", b.Entry)
	}

	_, err = Collect(prog, "nope.bpf.c", Limits{})
	mustInvalid(t, err, "nope.bpf.c", "entry file is not in the bundle")
}

func TestCollectDirSkips(t *testing.T) {
	root := writeTree(t, map[string]string{
		"p.bpf.c":      "",
		"inc/a.h":      "",
		".hidden.h":    "",
		".cache/x.h":   "",
		"inc/.y.bpf.c": "",
		"README.md":    "",
		"Makefile":     "",
		"obj/p.bpf.o":  "",
	})
	outside := writeTree(t, map[string]string{"o.bpf.c": "", "o.h": ""})
	// Symbolic links, to a file or a directory, are skipped.
	if err := os.Symlink(filepath.Join(outside, "o.h"), filepath.Join(root, "link.h")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "linkdir")); err != nil {
		t.Fatal(err)
	}
	b, err := Collect(root, "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(b), []string{"inc/a.h", "p.bpf.c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}

	// A symbolic link to the directory itself is followed: the user named it.
	link := filepath.Join(t.TempDir(), "rootlink")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	b2, err := Collect(link, "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b2.Digest() != b.Digest() {
		t.Errorf("through a link: files %q", names(b2))
	}

	// "." is not a hidden directory.
	t.Chdir(root)
	if _, err := Collect(".", "", Limits{}); err != nil {
		t.Error(err)
	}
}

func TestCollectDirLimits(t *testing.T) {
	dir := writeTree(t, map[string]string{"p.bpf.c": "", "a.h": "", "b.h": "", "c.h": "", "d.h": ""})
	_, err := Collect(dir, "", small)
	if ie, ok := errors.AsType[*InvalidError](err); !ok || !strings.Contains(ie.Reason, "more than 4 files") {
		t.Errorf("got %v", err)
	}
}

func TestScanIncludes(t *testing.T) {
	q := func(n string) include { return include{name: n} }
	a := func(n string) include { return include{name: n, angled: true} }
	tests := []struct {
		src  string
		want []include
	}{
		{`#include "a.h"`, []include{q("a.h")}},
		{`#include <a.h>`, []include{a("a.h")}},
		{"#include\t\"a.h\"", []include{q("a.h")}},
		{`  #  include  "a.h"  // trailing`, []include{q("a.h")}},
		{`#/* odd */include "a.h"`, []include{q("a.h")}},
		{`#include "a.h" /* trailing */`, []include{q("a.h")}},
		{"#inc\\\nlude \"a.h\"", []include{q("a.h")}},
		{"#include \\\r\n  \"a.h\"", []include{q("a.h")}},
		{`#include"a.h"`, []include{q("a.h")}},
		{`#include<a/b.h>`, []include{a("a/b.h")}},
		{`#embed "blob.bin" limit(4)`, []include{q("blob.bin")}},
		{`#embed <blob.bin>`, []include{a("blob.bin")}},
		{`#include_next <a.h>`, nil},
		{`#includes "a.h"`, nil},
		{`#include HDR`, nil},
		{`#include "unterminated`, nil},
		{`#include ""`, nil},
		{`#define X "#include \"a.h\""`, nil},
		{`int x; #include "a.h"`, nil},
		{`// #include "a.h"`, nil},
		{"/* \n#include \"a.h\"\n*/", nil},
		{"/* comment */ #include \"a.h\"", []include{q("a.h")}},
		{"/* multi\nline */ #include \"a.h\"", []include{q("a.h")}},
		{"const char *s = \"/*\";\n#include \"a.h\"\n// */", []include{q("a.h")}},
		{"char c = '\"';\n#include \"a.h\"", []include{q("a.h")}},
		{"#error don't\n#include \"a.h\"", []include{q("a.h")}},
		{"// comment \\\n#include \"a.h\"", nil},
		{"#if 0\n#include \"a.h\"\n#endif\n#include <b.h>", []include{q("a.h"), a("b.h")}},
		{"/* unterminated", nil},
		{"\"unterminated\n#include \"a.h\"", []include{q("a.h")}},
	}
	for _, tt := range tests {
		if got := scanIncludes([]byte(tt.src)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("scanIncludes(%q) = %v, want %v", tt.src, got, tt.want)
		}
	}
}

// writeTree creates files (names relative, slash-separated, "../x" allowed
// one level up) under a fresh directory and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "tree")
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
