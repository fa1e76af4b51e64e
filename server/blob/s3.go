package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/bpfarm/bpfarm/server/fault"
)

// S3Config configures an S3 Store.
type S3Config struct {
	// Endpoint is the server's host[:port], without scheme, e.g.
	// "s3.eu-west-1.amazonaws.com" or "127.0.0.1:9000".
	Endpoint string
	// Bucket holds the blobs. NewS3 creates it if it does not exist.
	Bucket string
	// AccessKey and SecretKey are static credentials. Both empty means
	// anonymous access.
	AccessKey string
	SecretKey string
	// Insecure selects plain HTTP instead of HTTPS.
	Insecure bool
	// Region is the bucket's region; empty lets the client discover it
	// (and creates a missing bucket in the server's default region).
	Region string
	// Prefix is prepended to every object key, e.g. "bpfarm/" to share a
	// bucket. Blobs are at PREFIX + "sha256/<64 hex digits>".
	Prefix string
}

// S3 is a Store in an S3 bucket, accessed with minio-go.
//
// Blobs are objects at PREFIX sha256/<64 hex digits>. An object only ever
// appears under such a key with complete, verified content:
//
//   - A Put whose digest is known and already stored uploads nothing.
//   - Blobs of at most 16 MiB are read into memory and hashed first, then
//     stored with a single PUT, which S3 makes visible atomically.
//   - Larger blobs are streamed in 16 MiB parts of a multipart upload, while
//     hashing. A multipart upload is invisible until completed, and Put
//     completes it only once the content's size and digest check out (it
//     aborts it otherwise). When the digest is known beforehand, the upload
//     goes straight to the final key. Otherwise the final key is not known
//     until the end, so the upload goes to a temporary key PREFIX tmp/<random>
//     that is then copied server-side to the final key (a single atomic
//     CopyObject up to 5 GiB, a multipart copy beyond) and removed.
//
// Memory use per Put is at most 16 MiB when the size is known, 32 MiB when
// it is not. Blobs are limited to
// 10000 parts of 16 MiB (about 156 GiB).
//
// A crash mid-Put can leave an incomplete multipart upload (invisible; MinIO
// removes them after a day by default, on AWS add an
// AbortIncompleteMultipartUpload lifecycle rule) or a temporary object,
// which RemoveStale deletes; NewS3 calls it for those older than a day.
type S3 struct {
	client *minio.Client
	core   *minio.Core
	bucket string
	prefix string
}

var _ Store = (*S3)(nil)

const (
	// s3SmallMax is the largest blob Put buffers for a single PUT.
	s3SmallMax = 16 << 20
	// s3PartSize is the part size of multipart uploads (S3 needs >= 5 MiB).
	s3PartSize = 16 << 20
	// s3MaxParts is S3's limit on the number of parts of an upload.
	s3MaxParts = 10000
	// s3MaxCopy is the largest object a single CopyObject can copy.
	s3MaxCopy = 5 << 30
	// s3StaleAge is the age beyond which NewS3 removes temporary objects.
	s3StaleAge = 24 * time.Hour
	// s3CleanupTimeout bounds cleanups (aborts, removals) that run even
	// after the Put's context is done.
	s3CleanupTimeout = time.Minute
)

// NewS3 connects to an S3 bucket, creating it if it does not exist, and
// removes temporary objects of interrupted Puts older than a day.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3 blob store: no endpoint")
	}
	if cfg.Bucket == "" {
		return nil, errors.New("s3 blob store: no bucket")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 blob store %s: %w", cfg.Endpoint, err)
	}
	s := &S3{
		client: client,
		core:   &minio.Core{Client: client},
		bucket: cfg.Bucket,
		prefix: cfg.Prefix,
	}
	if err := s.ensureBucket(ctx, cfg.Region); err != nil {
		return nil, fmt.Errorf("s3 blob store %s: %w", cfg.Endpoint, err)
	}
	if err := s.RemoveStale(ctx, s3StaleAge); err != nil {
		return nil, fmt.Errorf("s3 blob store %s: %w", cfg.Endpoint, err)
	}
	return s, nil
}

func (s *S3) ensureBucket(ctx context.Context, region string) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return fmt.Errorf("create bucket %s: %w", s.bucket, err)
	}
	return nil
}

// key returns the object key of blob d.
func (s *S3) key(d Digest) string { return s.prefix + "sha256/" + d.String() }

// tmpPrefix is the key prefix of temporary objects.
func (s *S3) tmpPrefix() string { return s.prefix + "tmp/" }

// RemoveStale removes temporary objects (of interrupted Puts) last modified
// more than olderThan ago. Running Puts' temporary objects are younger than
// their Put, so olderThan should exceed the longest Put.
func (s *S3) RemoveStale(ctx context.Context, olderThan time.Duration) error {
	ctx, cancel := context.WithCancel(ctx) // stops the listing on early return
	defer cancel()
	cutoff := time.Now().Add(-olderThan)
	objects := s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    s.tmpPrefix(),
		Recursive: true,
	})
	for obj := range objects {
		if obj.Err != nil {
			return fmt.Errorf("list temporary objects: %w", obj.Err)
		}
		if !obj.LastModified.Before(cutoff) {
			continue
		}
		err := s.client.RemoveObject(ctx, s.bucket, obj.Key, minio.RemoveObjectOptions{})
		if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
			return fmt.Errorf("remove temporary object %s: %w", obj.Key, err)
		}
	}
	return nil
}

// Put implements Store. If want is given and already stored, Put returns
// without reading r. When size is -1 the content is only limited by the
// maximum blob size: callers taking content from untrusted sources must
// limit it themselves.
func (s *S3) Put(ctx context.Context, r io.Reader, size int64, want Digest) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("s3 put: %w", err)
	}
	if size < 0 {
		size = -1
	}
	if size > s3MaxParts*s3PartSize {
		return Info{}, fmt.Errorf("s3 put: %d bytes is over the limit of %d", size, int64(s3MaxParts*s3PartSize))
	}
	if !want.Zero() {
		info, err := s.Stat(ctx, want)
		if err == nil {
			if size >= 0 && info.Size != size {
				return Info{}, fmt.Errorf("s3 put %s: announced %d bytes, stored blob has %d: %w",
					want, size, info.Size, ErrDigestMismatch)
			}
			return info, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Info{}, fmt.Errorf("s3 put: %w", err)
		}
	}

	pr := newPutReader(ctx, r)
	var src io.Reader = pr
	if size >= 0 {
		// Read one byte more than announced to detect longer content
		// without reading an unbounded stream.
		src = io.LimitReader(pr, size+1)
	}
	if size > s3SmallMax {
		return s.putLarge(ctx, nil, src, pr, size, want)
	}

	// Read the content, up to s3SmallMax+1 bytes: if it ends before, it is
	// small. (With a known size, src ends after size+1 bytes at most.)
	head, err := readUpTo(src, size, s3SmallMax+1)
	if err != nil {
		return Info{}, fmt.Errorf("s3 put: %w", err)
	}
	if size < 0 && len(head) > s3SmallMax {
		return s.putLarge(ctx, head, src, pr, size, want)
	}
	info := Info{Digest: pr.sum(), Size: pr.n}
	if err := checkPut(info, size, want); err != nil {
		return Info{}, err
	}
	if want.Zero() {
		// Skip the upload if the blob is already stored: a HEAD is cheaper.
		if _, err := s.Stat(ctx, info.Digest); err == nil {
			return info, nil
		} else if !errors.Is(err, ErrNotFound) {
			return Info{}, fmt.Errorf("s3 put: %w", err)
		}
	}
	// Passing the SHA-256 lets the server verify the body too (over HTTPS;
	// over plain HTTP minio-go signs each chunk of the body instead).
	_, err = s.core.PutObject(ctx, s.bucket, s.key(info.Digest), bytes.NewReader(head), info.Size,
		"", info.Digest.String(), minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return Info{}, fmt.Errorf("s3 put %s: %w", info.Digest, unavailable(ctx, err))
	}
	return info, nil
}

// putLarge uploads head followed by the rest of src as a multipart upload:
// to the final key if want is known, else to a temporary key that is copied
// to the final key once the digest is known. pr is the reader under src,
// which hashes and counts the content.
func (s *S3) putLarge(ctx context.Context, head []byte, src io.Reader, pr *putReader, size int64, want Digest) (Info, error) {
	key := s.key(want)
	if want.Zero() {
		key = s.tmpPrefix() + newTempName()
	}
	check := func() (Info, error) {
		info := Info{Digest: pr.sum(), Size: pr.n}
		return info, checkPut(info, size, want)
	}
	info, err := s.multipartUpload(ctx, key, io.MultiReader(bytes.NewReader(head), src), check)
	if err != nil {
		return Info{}, err
	}
	if !want.Zero() {
		return info, nil
	}

	// The content went to a temporary key: copy it to its final key.
	defer s.cleanup(ctx, func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	})
	if _, err := s.Stat(ctx, info.Digest); err == nil {
		return info, nil // already stored
	} else if !errors.Is(err, ErrNotFound) {
		return Info{}, fmt.Errorf("s3 put: %w", err)
	}
	dst := minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(info.Digest)}
	srcOpts := minio.CopySrcOptions{Bucket: s.bucket, Object: key}
	if info.Size <= s3MaxCopy {
		_, err = s.client.CopyObject(ctx, dst, srcOpts)
	} else {
		_, err = s.client.ComposeObject(ctx, dst, srcOpts)
	}
	if err != nil {
		return Info{}, fmt.Errorf("s3 put %s: copy from temporary object: %w", info.Digest, unavailable(ctx, err))
	}
	return info, nil
}

// multipartUpload streams r to key in parts of s3PartSize. Once r is
// exhausted, it calls check, and completes the upload only if check
// succeeds; it aborts the upload on every error.
func (s *S3) multipartUpload(ctx context.Context, key string, r io.Reader, check func() (Info, error)) (info Info, err error) {
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return Info{}, fmt.Errorf("s3 put: start multipart upload: %w", unavailable(ctx, err))
	}
	defer func() {
		if err != nil {
			s.cleanup(ctx, func(ctx context.Context) error {
				return s.core.AbortMultipartUpload(ctx, s.bucket, key, id)
			})
		}
	}()

	buf := partBufPool.Get().(*[]byte)
	defer partBufPool.Put(buf)
	var parts []minio.CompletePart
	for num := 1; ; num++ {
		n, rerr := io.ReadFull(r, *buf)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return Info{}, fmt.Errorf("s3 put: %w", rerr)
		}
		if n == 0 {
			break
		}
		if num > s3MaxParts {
			return Info{}, fmt.Errorf("s3 put: content over the limit of %d bytes", int64(s3MaxParts*s3PartSize))
		}
		// A bytes.Reader is seekable, so minio-go can retry the part.
		p, err := s.core.PutObjectPart(ctx, s.bucket, key, id, num, bytes.NewReader((*buf)[:n]), int64(n), minio.PutObjectPartOptions{})
		if err != nil {
			return Info{}, fmt.Errorf("s3 put: upload part %d: %w", num, unavailable(ctx, err))
		}
		parts = append(parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
		if rerr != nil {
			break // short read: that was the last part
		}
	}
	if info, err = check(); err != nil {
		return Info{}, err
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, key, id, parts, minio.PutObjectOptions{}); err != nil {
		return Info{}, fmt.Errorf("s3 put: complete multipart upload: %w", unavailable(ctx, err))
	}
	return info, nil
}

// readUpTo reads r until EOF or until it has read limit bytes. size is the
// content's announced size (or -1), a hint for the buffer size.
func readUpTo(r io.Reader, size int64, limit int) ([]byte, error) {
	c := 64 << 10
	if size >= 0 {
		c = int(min(size+1, int64(limit)))
	}
	b := make([]byte, 0, min(c, limit))
	for len(b) < limit {
		if len(b) == cap(b) {
			// Grow, but never beyond limit.
			nb := make([]byte, len(b), min(2*cap(b), limit))
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

var partBufPool = sync.Pool{New: func() any { b := make([]byte, s3PartSize); return &b }}

// cleanup runs f with a context that is not canceled with ctx (f must run
// even when a Put fails because its context is done). Its error is dropped:
// what it leaves behind is invisible or removed by RemoveStale.
func (s *S3) cleanup(ctx context.Context, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3CleanupTimeout)
	defer cancel()
	_ = f(ctx)
}

// newTempName returns a name for a temporary object (tests hook it).
var newTempName = randomName

// randomName returns a random name for a temporary object.
func randomName() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Get implements Store. It returns ErrNotFound from Get itself, not from
// the first Read: the request is made before Get returns.
func (s *S3) Get(ctx context.Context, d Digest) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3 get %s: %w", d, err)
	}
	// Core.GetObject sends the GET right away (Client.GetObject only does at
	// the first Read or Stat) and returns the response body.
	body, _, _, err := s.core.GetObject(ctx, s.bucket, s.key(d), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrapErr(ctx, "get", d, err)
	}
	return body, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, d Digest) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("s3 stat %s: %w", d, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, s.key(d), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.wrapErr(ctx, "stat", d, err)
	}
	return Info{Digest: d, Size: oi.Size}, nil
}

// wrapErr wraps an error of operation op on blob d, mapping S3's NoSuchKey to
// ErrNotFound and classifying the others (see unavailable).
func (s *S3) wrapErr(ctx context.Context, op string, d Digest, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("s3 %s %s: %w", op, d, ErrNotFound)
	}
	return fmt.Errorf("s3 %s %s: %w", op, d, unavailable(ctx, err))
}

// unavailable classifies the error of a request to S3 made with ctx: it
// wraps fault.ErrStorageUnavailable (S3 does not answer, or refuses),
// unless ctx ended first (the caller's cancellation or deadline, which
// the caller classifies).
func unavailable(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	return fault.Wrap(fault.ErrStorageUnavailable, err)
}

// Check implements Store: the bucket answers a HEAD request.
func (s *S3) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 check: %w", err)
	}
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3 check bucket %s: %w", s.bucket, unavailable(ctx, err))
	}
	if !ok {
		return fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("s3 check: bucket %s does not exist", s.bucket))
	}
	return nil
}

// String describes the store, for logs.
func (s *S3) String() string {
	return "s3://" + s.bucket + "/" + s.prefix
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, d Digest) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 delete %s: %w", d, err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(d), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return fmt.Errorf("s3 delete %s: %w", d, unavailable(ctx, err))
	}
	return nil
}

// List implements Store.
func (s *S3) List(ctx context.Context, fn func(Entry) error) error {
	ctx, cancel := context.WithCancel(ctx) // stops the listing on early return
	defer cancel()
	prefix := s.prefix + "sha256/"
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("s3 list: %w", unavailable(ctx, obj.Err))
		}
		d, err := ParseDigest(strings.TrimPrefix(obj.Key, prefix))
		if err != nil {
			continue // not a blob
		}
		if err := fn(Entry{Info: Info{Digest: d, Size: obj.Size}, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}
