package manifest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func sample() *Manifest {
	return &Manifest{Version: Version, Program: "execsnoop", Revision: strings.Repeat("ab", 32), BuildID: 7,
		Arch: "x86_64", Kernel: "debian/12/x86_64/6.1.0-50-cloud-amd64", Compiler: "clang 19", Flags: []string{"-DX=<&>"},
		CreatedAt: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC),
		Files:     map[string]File{FileObject: {Name: "execsnoop.bpf.o", SHA256: strings.Repeat("0", 64), Size: 10}},
		Status:    "poisoned",
		Report: Report{Kernel: "debian/12/x86_64/6.1.0-50-cloud-amd64", Programs: []ProgramReport{{Name: "p", Section: "tp/x/y",
			Status: "poisoned", Poisoned: []Poison{{Kind: "field_byte_offset", Path: "task_struct.real_parent"}}}}}}
}

func TestSignVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	m := sample()
	if err := m.Verify(pub); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
	if err := m.Sign(priv); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(pub); err != nil {
		t.Fatal(err)
	}
	// Round trip through JSON (pretty, reordered) keeps the signature valid.
	b, _ := json.MarshalIndent(m, "", "   ")
	m2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Verify(pub); err != nil {
		t.Fatalf("after round trip: %v", err)
	}
	// Any change breaks it.
	m2.Files[FileObject] = File{Name: "execsnoop.bpf.o", SHA256: strings.Repeat("1", 64), Size: 10}
	if err := m2.Verify(pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if err := m.Verify(other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
}

func TestCanonical(t *testing.T) {
	a, err := Canonicalize([]byte(`{"b": [1, {"z": true, "a": null}], "a": "<&>"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"<&>","b":[1,{"a":null,"z":true}]}`; string(a) != want {
		t.Fatalf("canonical %s, want %s", a, want)
	}
	if _, err := Canonicalize([]byte(`{"x": 1.5}`)); err == nil {
		t.Fatal("float accepted")
	}
	if _, err := Parse([]byte(`{"version": 1, "unknown": 2}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func TestVerifyFile(t *testing.T) {
	m := sample()
	content := []byte("0123456789")
	m.Files[FileObject] = File{Name: "o", SHA256: "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882", Size: 10}
	if err := m.VerifyFile(FileObject, content); err != nil {
		t.Fatal(err)
	}
	if err := m.VerifyFile(FileObject, []byte("0123456780")); err == nil {
		t.Fatal("tampered content accepted")
	}
}
