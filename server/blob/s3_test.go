package blob_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
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

// checkClean fails the test if the bucket has objects outside PREFIX
// sha256/ or incomplete multipart uploads.
func checkClean(t *testing.T, cfg blob.S3Config) {
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
	for u := range c.ListIncompleteUploads(ctx, cfg.Bucket, cfg.Prefix, true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("incomplete upload of %s left behind", u.Key)
	}
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
				t.Cleanup(func() { checkClean(t, cfg) })
				return s
			})
		})
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
