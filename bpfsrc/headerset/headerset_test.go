package headerset

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

func TestBuiltinLibbpfDev(t *testing.T) {
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		t.Skip("libbpf-dev not installed")
	}
	files, err := ReadDir("/usr/include")
	if err != nil {
		t.Fatal(err)
	}
	set, err := New(files)
	if err != nil {
		t.Fatal(err)
	}
	if set.Version == "" || len(set.Digest) != 64 {
		t.Fatalf("version %q digest %q", set.Version, set.Digest)
	}
	var buf bytes.Buffer
	if err := set.WriteTarGz(&buf); err != nil {
		t.Fatal(err)
	}
	again, err := ReadTarGz(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != set.Digest || again.Version != set.Version {
		t.Fatalf("round trip: %s %s, want %s %s", again.Digest, again.Version, set.Digest, set.Version)
	}
	dir := t.TempDir()
	if err := set.Install(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/bpf/bpf_helpers.h"); err != nil {
		t.Fatal(err)
	}
}

func TestRefused(t *testing.T) {
	h := bpfsrc.File{Name: "bpf_helpers.h", Data: []byte("x")}
	for name, files := range map[string][]bpfsrc.File{
		"no helpers":  {{Name: "bpf_tracing.h"}},
		"not .h":      {h, {Name: "usdt.c"}},
		"nested":      {{Name: "a/bpf_helpers.h"}, {Name: "b/x.h"}},
		"escape":      {h, {Name: "../x.h"}},
		"nul":         {h, {Name: "x.h", Data: []byte{0}}},
		"option-like": {h, {Name: "-x.h"}},
		"empty":       {},
	} {
		_, err := New(files)
		var ie *InvalidError
		if !errors.As(err, &ie) {
			t.Errorf("%s: got %v, want an *InvalidError", name, err)
		}
	}
	// One shared directory is stripped.
	set, err := New([]bpfsrc.File{{Name: "src/bpf_helpers.h", Data: []byte("x")}, {Name: "src/libbpf_version.h",
		Data: []byte("#define LIBBPF_MAJOR_VERSION 1\n#define LIBBPF_MINOR_VERSION 5\n")}})
	if err != nil || set.Version != "1.5" || set.Files[0].Name != "bpf_helpers.h" {
		t.Fatalf("src/ set: %v %+v", err, set)
	}
}
