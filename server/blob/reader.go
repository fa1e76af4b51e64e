package blob

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"sync"
)

// putReader reads a Put's content: it hashes and counts what it reads and
// fails once the context is done.
type putReader struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
}

func newPutReader(ctx context.Context, r io.Reader) *putReader {
	return &putReader{ctx: ctx, r: r, h: sha256.New()}
}

func (p *putReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.h.Write(b[:n])
	p.n += int64(n)
	return n, err
}

// sum returns the digest of what was read so far.
func (p *putReader) sum() Digest {
	var d Digest
	p.h.Sum(d[:0])
	return d
}

// checkPut checks a Put's content (got) against the announced size (or -1)
// and the expected digest (or zero).
func checkPut(got Info, size int64, want Digest) error {
	if size >= 0 && got.Size != size {
		if got.Size > size {
			return fmt.Errorf("put blob: content longer than announced %d bytes: %w", size, ErrDigestMismatch)
		}
		return fmt.Errorf("put blob: content has %d bytes, announced %d: %w", got.Size, size, ErrDigestMismatch)
	}
	if !want.Zero() && got.Digest != want {
		return fmt.Errorf("put blob: content hashes to %s, want %s: %w", got.Digest, want, ErrDigestMismatch)
	}
	return nil
}

// copyBufSize is the buffer size for streaming copies.
const copyBufSize = 256 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

func getCopyBuf() *[]byte  { return copyBufPool.Get().(*[]byte) }
func putCopyBuf(b *[]byte) { copyBufPool.Put(b) }
