// Package blobtest is a conformance test suite for blob.Store
// implementations and decorators.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/bpfarm/bpfarm/server/blob"
)

// Sizes used by the suite. Large sizes are above 16 MiB, where stores may
// switch strategy (the S3 store does).
const (
	largeSize  = 40 << 20
	mediumSize = 17<<20 + 12345
	exactSize  = 32 << 20 // a multiple of common part sizes
)

// Run runs the conformance suite. newStore must return a new, empty store
// for each subtest; it may register cleanups on the subtest's t.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, newStore(t)) })
	t.Run("UnknownSize", func(t *testing.T) { testUnknownSize(t, newStore(t)) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, newStore(t)) })
	t.Run("Large", func(t *testing.T) { testLarge(t, newStore(t)) })
	t.Run("LargeWant", func(t *testing.T) { testLargeWant(t, newStore(t)) })
	t.Run("LargeIdempotent", func(t *testing.T) { testLargeIdempotent(t, newStore(t)) })
	t.Run("Want", func(t *testing.T) { testWant(t, newStore(t)) })
	t.Run("WrongWant", func(t *testing.T) { testWrongWant(t, newStore(t), 1000) })
	t.Run("WrongWantLarge", func(t *testing.T) { testWrongWant(t, newStore(t), mediumSize) })
	t.Run("WrongSize", func(t *testing.T) { testWrongSize(t, newStore(t), 1000) })
	t.Run("WrongSizeLarge", func(t *testing.T) { testWrongSize(t, newStore(t), mediumSize) })
	t.Run("WrongSizeStored", func(t *testing.T) { testWrongSizeStored(t, newStore(t)) })
	t.Run("Idempotent", func(t *testing.T) { testIdempotent(t, newStore(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newStore(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newStore(t)) })
	t.Run("Canceled", func(t *testing.T) { testCanceled(t, newStore(t)) })
	t.Run("CanceledMidPut", func(t *testing.T) { testCanceledMidPut(t, newStore(t), 1<<20) })
	t.Run("CanceledMidPutLarge", func(t *testing.T) { testCanceledMidPut(t, newStore(t), mediumSize) })
	t.Run("ReaderError", func(t *testing.T) { testReaderError(t, newStore(t), 70_000) })
	t.Run("ReaderErrorLarge", func(t *testing.T) { testReaderError(t, newStore(t), mediumSize) })
	t.Run("PartialRead", func(t *testing.T) { testPartialRead(t, newStore(t)) })
	t.Run("Helpers", func(t *testing.T) { testHelpers(t, newStore(t)) })
	t.Run("DeleteList", func(t *testing.T) { testDeleteList(t, newStore(t)) })
	t.Run("Check", func(t *testing.T) { testCheck(t, newStore(t)) })
}

// testCheck checks that a working store's health check passes.
func testCheck(t *testing.T, s blob.Store) {
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	put(t, s, []byte("checked"), -1, blob.Digest{})
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check after a Put: %v", err)
	}
}

// Random returns n pseudo-random bytes determined by seed.
func Random(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(seedBytes(seed)).Read(b)
	return b
}

// Generator returns a reader of n pseudo-random bytes determined by seed,
// generated as they are read, and the digest of those bytes (computed by
// streaming them once, without holding them in memory).
func Generator(seed uint64, n int64) (io.Reader, blob.Digest) {
	h := sha256.New()
	if _, err := io.Copy(h, newGen(seed, n)); err != nil {
		panic(err) // generators do not fail
	}
	var d blob.Digest
	h.Sum(d[:0])
	return newGen(seed, n), d
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return s
}

func newGen(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seedBytes(seed)), n)
}

// put calls s.Put and fails the test on error.
func put(t testing.TB, s blob.Store, b []byte, size int64, want blob.Digest) blob.Info {
	t.Helper()
	info, err := s.Put(t.Context(), bytes.NewReader(b), size, want)
	if err != nil {
		t.Fatalf("Put(%d bytes, size %d, want %v): %v", len(b), size, want, err)
	}
	if wantInfo := (blob.Info{Digest: blob.Sum(b), Size: int64(len(b))}); info != wantInfo {
		t.Fatalf("Put(%d bytes) = %+v, want %+v", len(b), info, wantInfo)
	}
	return info
}

// check fails the test unless s holds exactly b under its digest.
func check(t testing.TB, s blob.Store, b []byte) {
	t.Helper()
	d := blob.Sum(b)
	info, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat(%v): %v", d, err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("Stat(%v) = %+v, want size %d", d, info, len(b))
	}
	rc, err := s.Get(t.Context(), d)
	if err != nil {
		t.Fatalf("Get(%v): %v", d, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%v): read: %v", d, err)
	}
	if !bytes.Equal(got, b) {
		t.Fatalf("Get(%v) returned %d bytes (digest %v), want %d bytes", d, len(got), blob.Sum(got), len(b))
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Get(%v): close: %v", d, err)
	}
}

// checkStream fails the test unless s holds a blob d of size bytes
// (without holding it in memory).
func checkStream(t testing.TB, s blob.Store, d blob.Digest, size int64) {
	t.Helper()
	info, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat(%v): %v", d, err)
	}
	if info != (blob.Info{Digest: d, Size: size}) {
		t.Fatalf("Stat(%v) = %+v, want size %d", d, info, size)
	}
	rc, err := s.Get(t.Context(), d)
	if err != nil {
		t.Fatalf("Get(%v): %v", d, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("Get(%v): read: %v", d, err)
	}
	var got blob.Digest
	h.Sum(got[:0])
	if n != size || got != d {
		t.Fatalf("Get(%v) returned %d bytes hashing to %v", d, n, got)
	}
}

// checkAbsent fails the test if s holds d.
func checkAbsent(t testing.TB, s blob.Store, d blob.Digest) {
	t.Helper()
	if info, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(%v) = %+v, %v; want ErrNotFound", d, info, err)
	}
	rc, err := s.Get(t.Context(), d)
	if !errors.Is(err, blob.ErrNotFound) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("Get(%v) error = %v; want ErrNotFound", d, err)
	}
}

func testRoundTrip(t *testing.T, s blob.Store) {
	b := Random(1, 1000)
	put(t, s, b, int64(len(b)), blob.Digest{})
	check(t, s, b)
}

func testUnknownSize(t *testing.T, s blob.Store) {
	b := Random(2, 100_000)
	put(t, s, b, -1, blob.Digest{})
	check(t, s, b)
}

func testEmpty(t *testing.T, s blob.Store) {
	if blob.Sum(nil).String() != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatal("Sum(nil) is not SHA-256 of nothing")
	}
	put(t, s, nil, 0, blob.Digest{})
	put(t, s, nil, -1, blob.Digest{})
	put(t, s, nil, 0, blob.Sum(nil))
	check(t, s, nil)
}

func testLarge(t *testing.T, s blob.Store) {
	// Unknown size and digest: the hardest case for a store.
	r, d := Generator(3, largeSize)
	info, err := s.Put(t.Context(), r, -1, blob.Digest{})
	if err != nil {
		t.Fatalf("Put(%d bytes): %v", largeSize, err)
	}
	if info != (blob.Info{Digest: d, Size: largeSize}) {
		t.Fatalf("Put(%d bytes) = %+v, want digest %v", largeSize, info, d)
	}
	checkStream(t, s, d, largeSize)
}

func testLargeWant(t *testing.T, s blob.Store) {
	r, d := Generator(4, mediumSize)
	info, err := s.Put(t.Context(), r, mediumSize, d)
	if err != nil {
		t.Fatalf("Put(%d bytes, want %v): %v", mediumSize, d, err)
	}
	if info != (blob.Info{Digest: d, Size: mediumSize}) {
		t.Fatalf("Put(%d bytes) = %+v, want digest %v", mediumSize, info, d)
	}
	checkStream(t, s, d, mediumSize)
}

// testLargeIdempotent puts large content twice, with unknown then known
// digest and size.
func testLargeIdempotent(t *testing.T, s blob.Store) {
	for _, known := range []bool{false, false, true} {
		r, d := Generator(18, exactSize)
		size, want := int64(-1), blob.Digest{}
		if known {
			size, want = exactSize, d
		}
		info, err := s.Put(t.Context(), r, size, want)
		if err != nil {
			t.Fatalf("Put(%d bytes, size %d, want %v): %v", exactSize, size, want, err)
		}
		if info != (blob.Info{Digest: d, Size: exactSize}) {
			t.Fatalf("Put(%d bytes) = %+v, want digest %v", exactSize, info, d)
		}
	}
	checkStream(t, s, mustDigest(Generator(18, exactSize)), exactSize)
}

func mustDigest(_ io.Reader, d blob.Digest) blob.Digest { return d }

func testWant(t *testing.T, s blob.Store) {
	b := Random(5, 5000)
	put(t, s, b, int64(len(b)), blob.Sum(b))
	check(t, s, b)
	c := Random(6, 5000)
	put(t, s, c, -1, blob.Sum(c))
	check(t, s, c)
}

func testWrongWant(t *testing.T, s blob.Store, n int64) {
	r, d := Generator(7, n)
	wrong := blob.Sum([]byte("something else"))
	for _, size := range []int64{n, -1} {
		info, err := s.Put(t.Context(), r, size, wrong)
		if !errors.Is(err, blob.ErrDigestMismatch) {
			t.Fatalf("Put(size %d, wrong want) = %+v, %v; want ErrDigestMismatch", size, info, err)
		}
		checkAbsent(t, s, d)
		checkAbsent(t, s, wrong)
		r, _ = Generator(7, n)
	}
}

func testWrongSize(t *testing.T, s blob.Store, n int64) {
	_, d := Generator(8, n)
	for _, size := range []int64{n - 1, n + 1, 0, 2 * n} {
		for _, want := range []blob.Digest{{}, d} {
			r, _ := Generator(8, n)
			info, err := s.Put(t.Context(), r, size, want)
			if !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("Put(%d bytes, size %d, want %v) = %+v, %v; want ErrDigestMismatch", n, size, want, info, err)
			}
			checkAbsent(t, s, d)
		}
	}
}

// testWrongSizeStored announces a wrong size for content that is stored.
func testWrongSizeStored(t *testing.T, s blob.Store) {
	b := Random(9, 3000)
	put(t, s, b, int64(len(b)), blob.Digest{})
	for _, want := range []blob.Digest{{}, blob.Sum(b)} {
		info, err := s.Put(t.Context(), bytes.NewReader(b), int64(len(b))+1, want)
		if !errors.Is(err, blob.ErrDigestMismatch) {
			t.Fatalf("Put(size+1, want %v) = %+v, %v; want ErrDigestMismatch", want, info, err)
		}
	}
	check(t, s, b)
}

func testIdempotent(t *testing.T, s blob.Store) {
	b := Random(10, 4096)
	for _, size := range []int64{int64(len(b)), -1} {
		for _, want := range []blob.Digest{{}, blob.Sum(b)} {
			put(t, s, b, size, want)
		}
	}
	check(t, s, b)
}

func testNotFound(t *testing.T, s blob.Store) {
	checkAbsent(t, s, blob.Sum([]byte("never stored")))
	// A digest differing from a stored one in its last byte only.
	b := Random(11, 100)
	d := put(t, s, b, -1, blob.Digest{}).Digest
	d[len(d)-1] ^= 1
	checkAbsent(t, s, d)
}

// listAll returns every listed blob by digest, failing on duplicates.
func listAll(t *testing.T, s blob.Store) map[blob.Digest]blob.Entry {
	t.Helper()
	out := map[blob.Digest]blob.Entry{}
	err := s.List(context.Background(), func(e blob.Entry) error {
		if _, dup := out[e.Digest]; dup {
			return fmt.Errorf("blob %s listed twice", e.Digest)
		}
		out[e.Digest] = e
		return nil
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return out
}

func testDeleteList(t *testing.T, s blob.Store) {
	ctx := context.Background()
	if got := listAll(t, s); len(got) != 0 {
		t.Fatalf("a new store lists %d blobs", len(got))
	}
	var ds []blob.Digest
	for i := range 3 {
		b := Random(uint64(200+i), 1000*(i+1))
		ds = append(ds, put(t, s, b, int64(len(b)), blob.Digest{}).Digest)
	}
	got := listAll(t, s)
	if len(got) != 3 {
		t.Fatalf("List: %d blobs, want 3", len(got))
	}
	for i, d := range ds {
		e, ok := got[d]
		if !ok || e.Size != int64(1000*(i+1)) || e.ModTime.IsZero() {
			t.Fatalf("List: blob %d: %+v (listed %v)", i, e, ok)
		}
	}
	if err := s.Delete(ctx, ds[1]); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkAbsent(t, s, ds[1])
	if err := s.Delete(ctx, ds[1]); err != nil {
		t.Fatalf("Delete of a deleted blob: %v, want nil", err)
	}
	if err := s.Delete(ctx, blob.Sum([]byte("never stored"))); err != nil {
		t.Fatalf("Delete of an unknown blob: %v, want nil", err)
	}
	got = listAll(t, s)
	if _, ok := got[ds[1]]; ok || len(got) != 2 {
		t.Fatalf("after Delete, List has %d blobs (deleted one listed: %v)", len(got), ok)
	}
	// The others are intact, and the deleted one can be put again.
	for _, i := range []int{0, 2} {
		if _, err := s.Stat(ctx, ds[i]); err != nil {
			t.Fatalf("Stat of a kept blob: %v", err)
		}
	}
	b := Random(201, 2000)
	if d := put(t, s, b, int64(len(b)), ds[1]).Digest; d != ds[1] {
		t.Fatalf("put again: %s", d)
	}
	// List stops at fn's first error and returns it.
	stop := errors.New("stop")
	n := 0
	if err := s.List(ctx, func(blob.Entry) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("List with a failing fn: %v after %d calls, want stop after 1", err, n)
	}
}

func testConcurrent(t *testing.T, s blob.Store) {
	const n = 16
	// Goroutines 0-7 put the same content, 8-15 each their own; half with
	// a known digest.
	contents := make([][]byte, n)
	for i := range contents {
		seed := uint64(100)
		if i >= n/2 {
			seed += uint64(i)
		}
		contents[i] = Random(seed, 64<<10+i%3)
		if i < n/2 {
			contents[i] = contents[0]
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			b := contents[i]
			var want blob.Digest
			if i%2 == 0 {
				want = blob.Sum(b)
			}
			info, err := s.Put(t.Context(), bytes.NewReader(b), int64(len(b)), want)
			if err == nil && info != (blob.Info{Digest: blob.Sum(b), Size: int64(len(b))}) {
				err = fmt.Errorf("got %+v", info)
			}
			if err == nil {
				// Read it back while others write.
				var got []byte
				got, err = blob.ReadAll(t.Context(), s, blob.Sum(b), int64(len(b)))
				if err == nil && !bytes.Equal(got, b) {
					err = errors.New("read back other content")
				}
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	for _, b := range contents {
		check(t, s, b)
	}
}

func testCanceled(t *testing.T, s blob.Store) {
	stored := Random(12, 1000)
	put(t, s, stored, -1, blob.Digest{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	b := Random(13, 1000)
	if info, err := s.Put(ctx, bytes.NewReader(b), int64(len(b)), blob.Digest{}); err == nil {
		t.Errorf("Put(canceled context) = %+v, nil; want an error", info)
	}
	checkAbsent(t, s, blob.Sum(b))
	if rc, err := s.Get(ctx, blob.Sum(stored)); err == nil {
		rc.Close()
		t.Errorf("Get(canceled context): no error")
	}
	if info, err := s.Stat(ctx, blob.Sum(stored)); err == nil {
		t.Errorf("Stat(canceled context) = %+v, nil; want an error", info)
	}
}

// cancelingReader cancels a context once it has returned after bytes.
type cancelingReader struct {
	r      io.Reader
	after  int64
	n      int64
	cancel context.CancelFunc
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n >= c.after {
		c.cancel()
	}
	return n, err
}

func testCanceledMidPut(t *testing.T, s blob.Store, n int64) {
	for _, size := range []int64{n, -1} {
		r, d := Generator(14, n)
		ctx, cancel := context.WithCancel(t.Context())
		cr := &cancelingReader{r: r, after: n / 2, cancel: cancel}
		info, err := s.Put(ctx, cr, size, blob.Digest{})
		cancel()
		if err == nil {
			t.Fatalf("Put(size %d) canceled after %d bytes = %+v, nil; want an error", size, n/2, info)
		}
		checkAbsent(t, s, d)
	}
}

// errReader returns err after the content of r.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		err = e.err
	}
	return n, err
}

func testReaderError(t *testing.T, s blob.Store, n int64) {
	errBroken := errors.New("broken reader")
	_, d := Generator(15, n)
	for _, size := range []int64{n + 1, -1} {
		for _, want := range []blob.Digest{{}, d} {
			r, _ := Generator(15, n)
			info, err := s.Put(t.Context(), &errReader{r: r, err: errBroken}, size, want)
			if !errors.Is(err, errBroken) {
				t.Fatalf("Put(size %d, failing reader) = %+v, %v; want an error wrapping %v", size, info, err, errBroken)
			}
			checkAbsent(t, s, d)
		}
	}
}

func testPartialRead(t *testing.T, s blob.Store) {
	b := Random(16, 200_000)
	d := put(t, s, b, -1, blob.Digest{}).Digest
	for range 3 {
		rc, err := s.Get(t.Context(), d)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		p := make([]byte, 100)
		if _, err := io.ReadFull(rc, p); err != nil {
			t.Fatalf("Get: read: %v", err)
		}
		if !bytes.Equal(p, b[:100]) {
			t.Fatal("Get: wrong first bytes")
		}
		if err := rc.Close(); err != nil {
			t.Fatalf("Get: close after partial read: %v", err)
		}
	}
	check(t, s, b)
}

func testHelpers(t *testing.T, s blob.Store) {
	b := Random(17, 10_000)
	d, err := blob.PutBytes(t.Context(), s, b)
	if err != nil {
		t.Fatalf("PutBytes: %v", err)
	}
	if d != blob.Sum(b) {
		t.Fatalf("PutBytes = %v, want %v", d, blob.Sum(b))
	}
	got, err := blob.ReadAll(t.Context(), s, d, int64(len(b)))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("ReadAll(max = size) = %d bytes, %v; want the content", len(got), err)
	}
	if got, err := blob.ReadAll(t.Context(), s, d, int64(len(b))-1); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("ReadAll(max = size-1) = %d bytes, %v; want ErrTooLarge", len(got), err)
	}
	if _, err := blob.ReadAll(t.Context(), s, blob.Sum([]byte("absent")), 100); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ReadAll(absent) error = %v; want ErrNotFound", err)
	}
	if d, err := blob.PutBytes(t.Context(), s, nil); err != nil || d != blob.Sum(nil) {
		t.Fatalf("PutBytes(nil) = %v, %v", d, err)
	}
	if got, err := blob.ReadAll(t.Context(), s, blob.Sum(nil), 0); err != nil || len(got) != 0 {
		t.Fatalf("ReadAll(empty, max 0) = %d bytes, %v", len(got), err)
	}
}
