package blob

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
)

// Verifying returns a Store that checks what s returns: readers from its
// Get fail with an error wrapping ErrDigestMismatch, instead of returning
// io.EOF, when the content does not hash to the requested digest. This
// detects corruption in the backend. A reader closed before EOF verifies
// nothing.
//
// Put and Stat are passed through unchanged (every Store verifies Put).
func Verifying(s Store) Store { return verifying{s} }

type verifying struct{ Store }

// Get implements Store.
func (v verifying) Get(ctx context.Context, d Digest) (io.ReadCloser, error) {
	rc, err := v.Store.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	return &verifyReader{rc: rc, want: d, h: sha256.New()}, nil
}

// verifyReader hashes what it reads and checks the digest at EOF.
type verifyReader struct {
	rc   io.ReadCloser
	want Digest
	h    hash.Hash
	err  error // sticky: io.EOF once verified, or the mismatch
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		var got Digest
		v.h.Sum(got[:0])
		if got != v.want {
			err = fmt.Errorf("verify blob %s: content hashes to %s: %w", v.want, got, ErrDigestMismatch)
		}
		v.err = err
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }
