// Package secret seals the secrets a replica set keeps in its shared
// database — the manifest signing key, the first admin token — with
// AES-256-GCM under a key that only the replicas hold: the file named by
// `bpfarm serve --secret-key-file`, never stored in the database.
//
// A sealed secret is bound to its name (the name is the GCM additional
// data), so one secret's ciphertext cannot stand in for another's.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinKeyBytes is the least key material a key file must hold.
const MinKeyBytes = 32

// ErrWrongKey is returned when a sealed secret does not open with the key:
// another key sealed it (replicas started with different key files), or
// it was altered.
var ErrWrongKey = errors.New("sealed with another key, or altered")

// Key seals and opens secrets.
type Key struct{ aead cipher.AEAD }

// NewKey derives a Key from key material of at least MinKeyBytes bytes.
func NewKey(material []byte) (*Key, error) {
	if len(material) < MinKeyBytes {
		return nil, fmt.Errorf("secret key: %d bytes, want at least %d", len(material), MinKeyBytes)
	}
	k := sha256.Sum256(append([]byte("bpfarm secret key v1\x00"), material...))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return &Key{aead: aead}, nil
}

// ReadKeyFile reads a key file: base64 of at least MinKeyBytes bytes (as
// `head -c 32 /dev/urandom | base64` writes), or that many raw bytes.
// Surrounding white space is ignored.
func ReadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret key file: %w", err)
	}
	k, err := NewKey(material(b))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return k, nil
}

func material(b []byte) []byte {
	t := strings.TrimSpace(string(b))
	if d, err := base64.StdEncoding.DecodeString(t); err == nil && len(d) >= MinKeyBytes {
		return d
	}
	return []byte(t)
}

// LoadOrCreateKeyFile reads the key file at path, creating it (mode 0600,
// 32 random bytes in base64) when it does not exist: the embedded default,
// where the key lives in the data directory beside the database.
func LoadOrCreateKeyFile(path string) (k *Key, created bool, err error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, false, fmt.Errorf("generate secret key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, os.ErrExist):
		k, err := ReadKeyFile(path)
		return k, false, err
	case err != nil:
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(raw[:]) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("write secret key file %s: %w", path, err)
	}
	k, err = NewKey(raw[:])
	return k, true, err
}

// Seal encrypts plaintext as the secret name: a random nonce followed by
// the ciphertext and tag.
func (k *Key) Seal(name string, plaintext []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("secret: random nonce: %v", err)) // crypto/rand never fails on Linux
	}
	return k.aead.Seal(nonce, nonce, plaintext, []byte(name))
}

// Open decrypts the secret name sealed by Seal; ErrWrongKey if another key
// sealed it or it was altered.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns+k.aead.Overhead() {
		return nil, fmt.Errorf("secret %s: %w", name, ErrWrongKey)
	}
	p, err := k.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, ErrWrongKey)
	}
	return p, nil
}
