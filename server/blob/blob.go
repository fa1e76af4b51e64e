// Package blob is a small content-addressed blob store: every blob is named
// by the SHA-256 of its content.
//
// In the spirit of buildbarn's bb-storage, Store is a narrow interface with
// a few backends (a local directory, S3 via minio-go) and decorators that
// compose around any of them (metrics, read verification).
package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// Digest is the SHA-256 of a blob's content.
type Digest [sha256.Size]byte

// Zero reports whether d is the zero digest, meaning "not known".
func (d Digest) Zero() bool { return d == Digest{} }

// String returns the digest as lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler (lower-case hex).
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses 64 hex characters, optionally prefixed by "sha256:".
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) > 7 && s[:7] == "sha256:" {
		s = s[7:]
	}
	if len(s) != 2*sha256.Size {
		return d, fmt.Errorf("digest %q: want %d hex characters", s, 2*sha256.Size)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// Sum returns the digest of b.
func Sum(b []byte) Digest { return sha256.Sum256(b) }

// Info describes a stored blob.
type Info struct {
	Digest Digest
	Size   int64
}

// Errors returned by every Store.
var (
	// ErrNotFound is returned by Get and Stat for a digest that is not stored.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch is returned by Put when the content does not hash
	// to the expected digest (or has another size than announced); nothing
	// is stored then.
	ErrDigestMismatch = errors.New("blob digest mismatch")
)

// Store is a content-addressed blob store. Implementations are safe for
// concurrent use. Putting the same content twice is cheap and harmless.
type Store interface {
	// Put streams r into the store and returns its digest and size.
	// If want is not zero, the content must hash to want, else Put returns
	// an error wrapping ErrDigestMismatch and stores nothing. size is the
	// content's length when known, or -1. A blob is visible to Get only
	// once it is complete: a crash mid-Put never leaves a partial blob
	// under its digest.
	Put(ctx context.Context, r io.Reader, size int64, want Digest) (Info, error)
	// Get opens a stored blob for reading. It returns an error wrapping
	// ErrNotFound when the digest is not stored.
	Get(ctx context.Context, d Digest) (io.ReadCloser, error)
	// Stat returns a stored blob's info, or an error wrapping ErrNotFound.
	Stat(ctx context.Context, d Digest) (Info, error)
	// Delete removes a stored blob. Deleting a blob that is not stored
	// is not an error (so an interrupted garbage collection can run
	// again).
	Delete(ctx context.Context, d Digest) error
	// List calls fn for every stored blob, in no particular order, until
	// fn returns an error (which List returns). Blobs put or deleted
	// while List runs may or may not be listed.
	List(ctx context.Context, fn func(Entry) error) error
	// Check is a cheap health check: it returns nil when the store
	// answers and can take writes, else an error saying why (wrapping a
	// server/fault sentinel when the cause is known).
	Check(ctx context.Context) error
}

// Entry is a listed blob: its info and when it was last written (a Put
// of content already stored may or may not refresh it).
type Entry struct {
	Info
	ModTime time.Time
}
