package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/blob/blobtest"
)

// newS3 returns a store in a new bucket on the server of cfg.
func newS3(t testing.TB, cfg blob.S3Config) *blob.S3 {
	t.Helper()
	cfg.Bucket = testenv.UniqueBucket()
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawClient returns a plain minio client for cfg, to look at the bucket.
func rawClient(t testing.TB, cfg blob.S3Config) *minio.Client {
	t.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: cfg.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recording is a Store that records the digests passed to Put as want.
type recording struct {
	blob.Store
	mu    sync.Mutex
	wants []blob.Digest
}

func (r *recording) Put(ctx context.Context, rd io.Reader, size int64, want blob.Digest) (blob.Info, error) {
	if !want.Zero() {
		r.mu.Lock()
		r.wants = append(r.wants, want)
		r.mu.Unlock()
	}
	return r.Store.Put(ctx, rd, size, want)
}

// checkClean fails the test if the bucket has objects outside PREFIX
// sha256/, or incomplete multipart uploads to any key a Put may have used:
// the final keys of wanted digests, and temporary keys. (MinIO only lists
// the incomplete uploads of an exact key.)
func checkClean(t *testing.T, cfg blob.S3Config, wants []blob.Digest) {
	t.Helper()
	c := rawClient(t, cfg)
	ctx := context.WithoutCancel(t.Context()) // runs in a cleanup
	for obj := range c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		if !strings.HasPrefix(obj.Key, cfg.Prefix+"sha256/") {
			t.Errorf("unexpected object %s left in the bucket", obj.Key)
		}
	}
	var keys []string
	for _, d := range wants {
		keys = append(keys, cfg.Prefix+"sha256/"+d.String())
	}
	for _, name := range blob.TempNames() {
		keys = append(keys, cfg.Prefix+"tmp/"+name)
	}
	for _, key := range keys {
		if n := incompleteUploads(t, c, cfg.Bucket, key); n > 0 {
			t.Errorf("%d incomplete uploads of %s left behind", n, key)
		}
	}
}

// incompleteUploads returns the number of incomplete uploads of key.
func incompleteUploads(t *testing.T, c *minio.Client, bucket, key string) int {
	t.Helper()
	n := 0
	for u := range c.ListIncompleteUploads(context.WithoutCancel(t.Context()), bucket, key, false) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		if u.Key == key {
			n++
		}
	}
	return n
}

func TestS3(t *testing.T) {
	cfg := testenv.MinIO(t)
	for _, prefix := range []string{"", "some/prefix/"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			blobtest.Run(t, func(t *testing.T) blob.Store {
				cfg := cfg
				cfg.Prefix = prefix
				cfg.Bucket = testenv.UniqueBucket()
				s, err := blob.NewS3(t.Context(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				r := &recording{Store: s}
				t.Cleanup(func() { checkClean(t, cfg, r.wants) })
				return r
			})
		})
	}
}

// TestS3CheckClean checks that checkClean sees incomplete uploads.
func TestS3CheckClean(t *testing.T) {
	cfg := testenv.MinIO(t)
	if _, err := blob.NewS3(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, cfg)
	d := blob.Sum([]byte("x"))
	key := "sha256/" + d.String()
	if n := incompleteUploads(t, c, cfg.Bucket, key); n != 0 {
		t.Fatalf("%d incomplete uploads before starting one", n)
	}
	core := &minio.Core{Client: c}
	id, err := core.NewMultipartUpload(t.Context(), cfg.Bucket, key, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := incompleteUploads(t, c, cfg.Bucket, key); n != 1 {
		t.Fatalf("%d incomplete uploads after starting one, want 1", n)
	}
	if err := core.AbortMultipartUpload(t.Context(), cfg.Bucket, key, id); err != nil {
		t.Fatal(err)
	}
}

func TestS3Layout(t *testing.T) {
	cfg := testenv.MinIO(t)
	cfg.Prefix = "cas/"
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// NewS3 on an existing bucket is fine.
	if _, err := blob.NewS3(t.Context(), cfg); err != nil {
		t.Fatalf("NewS3 on existing bucket: %v", err)
	}
	b := []byte("hello, s3")
	d, err := blob.PutBytes(t.Context(), s, b)
	if err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, cfg)
	obj, err := c.GetObject(t.Context(), cfg.Bucket, "cas/sha256/"+d.String(), minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(obj); err != nil || !bytes.Equal(got.Bytes(), b) {
		t.Fatalf("object cas/sha256/%s holds %q, %v", d, got.Bytes(), err)
	}
}

func TestS3RemoveStale(t *testing.T) {
	cfg := testenv.MinIO(t)
	s, err := blob.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, cfg)
	// A temporary object as left by a Put interrupted by a crash.
	if _, err := c.PutObject(t.Context(), cfg.Bucket, "tmp/0123", strings.NewReader("partial"), 7, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	// Too recent to be removed.
	if err := s.RemoveStale(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StatObject(t.Context(), cfg.Bucket, "tmp/0123", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("recent temporary object removed: %v", err)
	}
	if err := s.RemoveStale(t.Context(), -time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err = c.StatObject(t.Context(), cfg.Bucket, "tmp/0123", minio.StatObjectOptions{})
	if minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		t.Fatalf("stale temporary object not removed: %v", err)
	}
}

func TestS3Errors(t *testing.T) {
	// Nothing listens on port 1: NewS3 fails (no ErrNotFound confusion).
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := blob.NewS3(ctx, blob.S3Config{Endpoint: "127.0.0.1:1", Bucket: "b", Insecure: true})
	if err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("NewS3(no server) error = %v", err)
	}
	if _, err := blob.NewS3(ctx, blob.S3Config{Bucket: "b"}); err == nil {
		t.Fatal("NewS3(no endpoint): no error")
	}
	if _, err := blob.NewS3(ctx, blob.S3Config{Endpoint: "127.0.0.1:1"}); err == nil {
		t.Fatal("NewS3(no bucket): no error")
	}

	cfg := testenv.MinIO(t)
	cfg.SecretKey = "wrong-secret"
	if _, err := blob.NewS3(t.Context(), cfg); err == nil {
		t.Fatal("NewS3(wrong credentials): no error")
	}
}
