// Package signing holds the server's ed25519 key, which signs artifact
// manifests, and produces signatures that agents verify against the public
// key they pin.
package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
)

// Key is the server's signing key.
type Key struct {
	priv ed25519.PrivateKey
}

// LoadOrCreate reads the PKCS#8 PEM private key at path, creating it (mode
// 0600) on first start. created reports whether a new key was made.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, false, fmt.Errorf("encode signing key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("create signing key: %w", err)
		}
		if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("write signing key %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, false, fmt.Errorf("write signing key %s: %w", path, err)
		}
		return &Key{priv: priv}, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("signing key %s: not a PEM PRIVATE KEY", path)
	}
	anyKey, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := anyKey.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("signing key %s: %T is not an ed25519 key", path, anyKey)
	}
	return &Key{priv: priv}, false, nil
}

// Public returns the public key.
func (k *Key) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// Sign signs msg.
func (k *Key) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

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

// Private returns the private key, for signers such as manifest.Sign.
func (k *Key) Private() ed25519.PrivateKey { return k.priv }
