// Package signing holds the server's ed25519 key, which signs artifact
// manifests that agents verify against the public key they pin.
//
// The key never leaves the package: SignAndStore signs a manifest and
// stores it, and that is the only thing it signs. Every replica of a
// replica set reads the same key from the shared database (Open), sealed
// there with the replicas' secret key (package secret).
package signing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/secret"
	"github.com/bpfarm/bpfarm/server/store"
)

// Key is the server's signing key.
type Key struct {
	priv ed25519.PrivateKey
}

// Generate returns a new key that is stored nowhere (tests).
func Generate() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &Key{priv: priv}, nil
}

// Secrets keeps sealed secrets (a *store.DB).
type Secrets interface {
	InitSecret(ctx context.Context, name string, sealed []byte) (stored []byte, created bool, err error)
}

// Open returns the replica set's signing key, stored in db under
// store.SecretSigningKey and sealed with sk. The first replica to start
// stores it — a new key, or the one in the PEM file legacy when that file
// exists (a data directory from before keys were kept in the database:
// agents go on verifying the manifests it signed) — and every other reads
// it back. created reports that this call stored it.
func Open(ctx context.Context, db Secrets, sk *secret.Key, legacy string) (k *Key, created bool, err error) {
	cand, err := readPEM(legacy)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if cand, err = Generate(); err != nil {
			return nil, false, err
		}
	case err != nil:
		return nil, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(cand.priv)
	if err != nil {
		return nil, false, fmt.Errorf("encode signing key: %w", err)
	}
	sealed, created, err := db.InitSecret(ctx, store.SecretSigningKey, sk.Seal(store.SecretSigningKey, der))
	if err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	if der, err = sk.Open(store.SecretSigningKey, sealed); err != nil {
		return nil, false, fmt.Errorf("signing key in the database: %w", err)
	}
	if k, err = parsePKCS8(der); err != nil {
		return nil, false, fmt.Errorf("signing key in the database: %w", err)
	}
	return k, created, nil
}

// readPEM reads a PKCS#8 PEM private key file.
func readPEM(path string) (*Key, error) {
	if path == "" {
		return nil, os.ErrNotExist
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PEM PRIVATE KEY", path)
	}
	k, err := parsePKCS8(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

func parsePKCS8(der []byte) (*Key, error) {
	anyKey, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	priv, ok := anyKey.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%T is not an ed25519 key", anyKey)
	}
	return &Key{priv: priv}, nil
}

// Public returns the public key.
func (k *Key) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// SignAndStore signs m (setting its key id and signature) and stores it in
// blobs as indented JSON with a final newline, the form agents download;
// it returns the manifest blob's digest.
func (k *Key) SignAndStore(ctx context.Context, blobs blob.Store, m *manifest.Manifest) (string, error) {
	if err := m.Sign(k.priv); err != nil {
		return "", fmt.Errorf("sign manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode manifest: %w", err)
	}
	d, err := blob.PutBytes(ctx, blobs, append(b, '\n'))
	if err != nil {
		return "", fmt.Errorf("store manifest: %w", err)
	}
	return d.String(), nil
}

// KeyID is a short, stable name for a public key: the first 16 hex digits
// of its SHA-256.
func KeyID(pub ed25519.PublicKey) string { return manifest.KeyID(pub) }

// PublicPEM encodes a public key as a PKIX "PUBLIC KEY" PEM block.
func PublicPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Describe returns the API's description of the public key.
func (k *Key) Describe() api.SigningKey {
	pub := k.Public()
	return api.SigningKey{
		Algorithm: "ed25519",
		PublicKey: base64.StdEncoding.EncodeToString(pub),
		PEM:       string(PublicPEM(pub)),
		KeyID:     KeyID(pub),
	}
}
