package blob_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/blob/blobtest"
)

func newLocal(t testing.TB) *blob.Local {
	t.Helper()
	l, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocal(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		l := newLocal(t)
		t.Cleanup(func() { checkNoTemp(t, l) })
		return l
	})
}

// checkNoTemp fails the test if l has temporary files left.
func checkNoTemp(t *testing.T, l *blob.Local) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("temporary file left behind: %s", e.Name())
	}
}

func TestLocalLayout(t *testing.T) {
	l := newLocal(t)
	b := []byte("hello, blob")
	d, err := blob.PutBytes(t.Context(), l, b)
	if err != nil {
		t.Fatal(err)
	}
	hex := d.String()
	name := filepath.Join(l.Dir(), "sha256", hex[:2], hex)
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != 0o444 {
		t.Errorf("blob file mode = %v, want 0444", got)
	}
	for _, dir := range []string{l.Dir(), filepath.Join(l.Dir(), "sha256"), filepath.Dir(name), filepath.Join(l.Dir(), "tmp")} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&^0o022 != 0o755&^0o022 {
			t.Errorf("%s: mode %v, want 0755 (less umask)", dir, got)
		}
	}
	content, err := os.ReadFile(name)
	if err != nil || !bytes.Equal(content, b) {
		t.Fatalf("blob file holds %q, %v", content, err)
	}
	rc, err := l.Get(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Get returned a %T, want *os.File", rc)
	}
}

func TestLocalRemovesStaleTemp(t *testing.T) {
	dir := t.TempDir()
	l, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A temporary file as left by a Put interrupted by a crash.
	stale := filepath.Join(dir, "tmp", "put-123")
	if err := os.WriteFile(stale, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.NewLocal(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file not removed: %v", err)
	}
	// The first store still works.
	if _, err := blob.PutBytes(t.Context(), l, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestLocalKeepsLiveTemp checks that NewLocal leaves alone the temporary
// file of a running Put, in another store on the same directory.
func TestLocalKeepsLiveTemp(t *testing.T) {
	dir := t.TempDir()
	l, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := blobtest.Random(1, 100_000)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := l.Put(t.Context(), pr, int64(len(b)), blob.Digest{})
		done <- err
	}()
	// Once the first half is consumed, the Put's temporary file exists.
	if _, err := pw.Write(b[:len(b)/2]); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.NewLocal(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write(b[len(b)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Put during NewLocal: %v", err)
	}
	got, err := blob.ReadAll(t.Context(), l, blob.Sum(b), int64(len(b)))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("ReadAll = %d bytes, %v", len(got), err)
	}
}

// corrupt overwrites the stored blob d in l.
func corrupt(t *testing.T, l *blob.Local, d blob.Digest, content []byte) {
	t.Helper()
	hex := d.String()
	name := filepath.Join(l.Dir(), "sha256", hex[:2], hex)
	if err := os.Chmod(name, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyingDetectsCorruption(t *testing.T) {
	l := newLocal(t)
	b := blobtest.Random(2, 300_000)
	d, err := blob.PutBytes(t.Context(), l, b)
	if err != nil {
		t.Fatal(err)
	}
	v := blob.Verifying(l)

	// Intact: reads fine.
	rc, err := v.Get(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("intact blob: read %d bytes, %v", len(got), err)
	}
	rc.Close()

	for name, bad := range map[string][]byte{
		"flipped":   append(append([]byte{}, b[:1000]...), append([]byte{b[1000] ^ 1}, b[1001:]...)...),
		"truncated": b[:len(b)-1],
		"extended":  append(append([]byte{}, b...), 0),
		"empty":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			corrupt(t, l, d, bad)
			rc, err := v.Get(t.Context(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			_, err = io.ReadAll(rc)
			if !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("read corrupt blob: %v; want ErrDigestMismatch", err)
			}
			// The error sticks.
			if _, err := rc.Read(make([]byte, 10)); !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("read after mismatch: %v; want ErrDigestMismatch", err)
			}
			// ReadAll verifies without Verifying.
			if _, err := blob.ReadAll(t.Context(), l, d, 1<<20); !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("ReadAll(corrupt blob): %v; want ErrDigestMismatch", err)
			}
		})
	}
}
