package blob_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/blob/blobtest"
)

const benchSize = 1 << 20

// benchStores returns the stores to benchmark: local, and S3 on a MinIO
// server (or only local if MinIO is unavailable and not Strict), each also
// under WithDeadlines (NAME-deadlines).
func benchStores(b *testing.B) map[string]blob.Store {
	local := newLocal(b)
	stores := map[string]blob.Store{"local": local}
	if _, err := testenv.LookBinary("minio", testenv.MinIOEnv); err == nil || testenv.Strict() {
		stores["s3"] = newS3(b, testenv.MinIO(b))
	}
	// The same stores under the deadlines every server call goes through.
	for _, name := range []string{"local", "s3"} {
		if s, ok := stores[name]; ok {
			stores[name+"-deadlines"] = blob.WithDeadlines(s, blob.Deadlines{})
		}
	}
	return stores
}

func BenchmarkPut(b *testing.B) {
	for name, s := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			content := blobtest.Random(1, benchSize)
			b.SetBytes(benchSize)
			var i uint64
			for b.Loop() {
				// New content every time, so that nothing is deduplicated.
				i++
				binary.LittleEndian.PutUint64(content, i)
				if _, err := s.Put(b.Context(), bytes.NewReader(content), benchSize, blob.Digest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	for name, s := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			d, err := blob.PutBytes(b.Context(), s, blobtest.Random(2, benchSize))
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 256<<10)
			b.SetBytes(benchSize)
			for b.Loop() {
				rc, err := s.Get(b.Context(), d)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, rc, buf)
				rc.Close()
				if err != nil || n != benchSize {
					b.Fatalf("read %d bytes, %v", n, err)
				}
			}
		})
	}
}
