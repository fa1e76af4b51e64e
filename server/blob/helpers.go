package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned by ReadAll for a blob larger than its limit.
var ErrTooLarge = errors.New("blob too large")

// PutBytes stores b in s and returns its digest. It passes the digest to
// Put, so stores skip the upload when b is already stored.
func PutBytes(ctx context.Context, s Store, b []byte) (Digest, error) {
	d := Sum(b)
	if _, err := s.Put(ctx, bytes.NewReader(b), int64(len(b)), d); err != nil {
		return Digest{}, err
	}
	return d, nil
}

// ReadAll reads blob d from s into memory. It returns an error wrapping
// ErrTooLarge, without reading further, if the blob has more than max bytes,
// and an error wrapping ErrDigestMismatch if the content does not hash to d,
// so the returned bytes are always verified.
func ReadAll(ctx context.Context, s Store, d Digest, max int64) ([]byte, error) {
	return ReadAllSized(ctx, s, d, max, -1)
}

// ReadAllSized is ReadAll for a blob whose size the caller knows (or -1):
// it reads into one buffer of that size instead of growing one.
func ReadAllSized(ctx context.Context, s Store, d Digest, max, size int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("read blob %s: negative limit %d", d, max)
	}
	rc, err := s.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var b []byte
	if size >= 0 && size <= max {
		buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
		_, err = buf.ReadFrom(io.LimitReader(rc, max+1))
		b = buf.Bytes()
	} else {
		b, err = io.ReadAll(io.LimitReader(rc, max+1))
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read blob %s: more than %d bytes: %w", d, max, ErrTooLarge)
	}
	if got := Sum(b); got != d {
		return nil, fmt.Errorf("read blob %s: content hashes to %s: %w", d, got, ErrDigestMismatch)
	}
	return b, nil
}
