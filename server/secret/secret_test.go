package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.key")
	k, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	sealed := k.Seal("signing-key", []byte("private"))
	if bytes.Contains(sealed, []byte("private")) {
		t.Fatal("sealed secret holds the plaintext")
	}
	// Another start reads the same key file and opens what the first sealed.
	k2, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("reload: %v %v", created, err)
	}
	if p, err := k2.Open("signing-key", sealed); err != nil || string(p) != "private" {
		t.Fatalf("open: %q %v", p, err)
	}
	// Bound to its name.
	if _, err := k2.Open("admin-token", sealed); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open under another name: %v", err)
	}
	// Altered.
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := k2.Open("signing-key", bad); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open altered: %v", err)
	}
	if _, err := k2.Open("signing-key", sealed[:5]); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open truncated: %v", err)
	}
	// Another key file.
	other, _, err := LoadOrCreateKeyFile(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open("signing-key", sealed); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with another key: %v", err)
	}
	// Two seals of one secret differ (random nonce).
	if bytes.Equal(k.Seal("x", []byte("p")), k.Seal("x", []byte("p"))) {
		t.Fatal("two seals are identical")
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// base64 (with a newline) and the same bytes raw are one key.
	raw := strings.Repeat("k", 32)
	b64, err := ReadKeyFile(write("b64", "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReadKeyFile(write("raw", raw))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := r.Open("n", b64.Seal("n", []byte("v"))); err != nil || string(p) != "v" {
		t.Fatalf("base64 and raw forms differ: %q %v", p, err)
	}
	if _, err := ReadKeyFile(write("short", "too short\n")); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short key: %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key file: %v", err)
	}
}
