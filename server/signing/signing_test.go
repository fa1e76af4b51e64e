package signing_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/secret"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

func openDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func secretKey(t *testing.T, dir string) *secret.Key {
	t.Helper()
	k, _, err := secret.LoadOrCreateKeyFile(filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Every replica reads the key the first one stored.
func TestOpenShared(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	dir := t.TempDir()
	sk := secretKey(t, dir)
	a, created, err := signing.Open(ctx, db, sk, "")
	if err != nil || !created {
		t.Fatalf("first start: %v %v", created, err)
	}
	b, created, err := signing.Open(ctx, db, sk, filepath.Join(dir, "missing.key"))
	if err != nil || created {
		t.Fatalf("second replica: %v %v", created, err)
	}
	if !a.Public().Equal(b.Public()) {
		t.Fatal("replicas hold different keys")
	}
	// A replica with another secret key file is refused.
	other := secretKey(t, t.TempDir())
	if _, _, err := signing.Open(ctx, db, other, ""); !errors.Is(err, secret.ErrWrongKey) {
		t.Fatalf("another secret key: %v", err)
	}
}

// An existing data directory's signing.key is carried over, so agents go
// on verifying the manifests it signed.
func TestOpenCarriesOverLegacyKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	legacy := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(legacy, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	db := openDB(t)
	k, created, err := signing.Open(ctx, db, secretKey(t, dir), legacy)
	if err != nil || !created || !k.Public().Equal(pub) {
		t.Fatalf("carry over: created=%v err=%v same=%v", created, err, k != nil && k.Public().Equal(pub))
	}
	// The database's key wins from then on, whatever file a replica has.
	if err := os.Remove(legacy); err != nil {
		t.Fatal(err)
	}
	k, _, err = signing.Open(ctx, db, secretKey(t, dir), legacy)
	if err != nil || !k.Public().Equal(pub) {
		t.Fatalf("after carry over: %v", err)
	}
}

func TestSignAndStore(t *testing.T) {
	ctx := context.Background()
	k, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Version: manifest.Version, Program: "p", Revision: "r", Arch: "x86_64", Kernel: "k",
		CreatedAt: time.Now().UTC().Truncate(time.Second), Files: map[string]manifest.File{}, Status: manifest.StatusOK}
	digest, err := k.SignAndStore(ctx, blobs, m)
	if err != nil {
		t.Fatal(err)
	}
	d, err := blob.ParseDigest(digest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := blob.ReadAll(ctx, blobs, d, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := manifest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(k.Public()); err != nil {
		t.Fatalf("stored manifest does not verify: %v", err)
	}
	other, _ := signing.Generate()
	if err := got.Verify(other.Public()); err == nil {
		t.Fatal("stored manifest verifies against another key")
	}
	if got.Program != "p" {
		t.Fatalf("stored manifest: %+v", got)
	}
}
