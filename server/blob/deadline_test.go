//go:build linux

package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/blob/blobtest"
	"github.com/bpfarm/bpfarm/server/fault"
)

func TestWithDeadlinesConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return blob.WithDeadlines(newLocal(t), blob.Deadlines{})
	})
}

// hangBound is how long a call may take before the test calls it hung:
// far beyond every deadline the tests set, so that a slow machine does
// not fail them, yet a call that waits for a frozen store does.
const hangBound = 2 * time.Minute

// bounded runs f, failing the test if it does not return within
// hangBound, and returns f's error and how long it took.
func bounded(t *testing.T, what string, f func() error) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(hangBound):
		t.Fatalf("%s: still waiting after %s: hung", what, hangBound)
		return nil, 0
	}
}

// wantFault requires err to be the infrastructure fault sentinel.
func wantFault(t *testing.T, what string, err, sentinel error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	if got := fault.Sentinel(err); got != sentinel {
		t.Errorf("%s: error %q is fault %v, want %v", what, err, got, sentinel)
	}
	if errors.Is(err, blob.ErrNotFound) {
		t.Errorf("%s: error %q claims the blob is not found", what, err)
	}
}

// TestDeadlinesFrozenS3 freezes a real MinIO server (SIGSTOP) under a
// store with deadlines: every call fails as "object storage unreachable"
// instead of hanging, large transfers included, and the same store works
// again once the server is thawed.
func TestDeadlinesFrozenS3(t *testing.T) {
	m := testenv.StartMinIO(t)
	backend, err := blob.NewS3(t.Context(), m.Config)
	if err != nil {
		t.Fatal(err)
	}
	dl := blob.Deadlines{Call: time.Second, Idle: 2 * time.Second, Fault: fault.ErrStorageUnavailable}
	s := blob.WithDeadlines(backend, dl)
	ctx := t.Context()

	small := blobtest.Random(1, 1000)
	d, err := blob.PutBytes(ctx, s, small)
	if err != nil {
		t.Fatal(err)
	}
	r, bigDigest := blobtest.Generator(2, 40<<20)
	if _, err := s.Put(ctx, r, -1, blob.Digest{}); err != nil {
		t.Fatal(err)
	}
	// A download under way when the server freezes.
	reading, err := s.Get(ctx, bigDigest)
	if err != nil {
		t.Fatal(err)
	}
	defer reading.Close()
	if _, err := io.ReadFull(reading, make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}

	m.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			m.Thaw()
		}
	}()
	ops := []struct {
		name string
		f    func() error
	}{
		{"stat", func() error { _, err := s.Stat(ctx, d); return err }},
		{"get", func() error { rc, err := s.Get(ctx, d); closeIf(rc); return err }},
		{"put small", func() error { _, err := blob.PutBytes(ctx, s, blobtest.Random(3, 1000)); return err }},
		{"put large", func() error {
			r, _ := blobtest.Generator(4, 20<<20)
			_, err := s.Put(ctx, r, -1, blob.Digest{})
			return err
		}},
		{"delete", func() error { return s.Delete(ctx, d) }},
		{"list", func() error { return s.List(ctx, func(blob.Entry) error { return nil }) }},
		{"check", func() error { return s.Check(ctx) }},
		{"read under way", func() error { _, err := io.Copy(io.Discard, reading); return err }},
	}
	for _, op := range ops {
		err, took := bounded(t, op.name, op.f)
		t.Logf("%s with the store frozen: failed after %v: %v", op.name, took.Round(time.Millisecond), err)
		wantFault(t, op.name, err, fault.ErrStorageUnavailable)
	}

	m.Thaw()
	thawed = true
	// The same store works again: nothing to reconnect or restart.
	if got, err := blob.ReadAll(ctx, s, d, 1<<20); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("after thaw: read %s: %v", d, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("after thaw: check: %v", err)
	}
	r, want := blobtest.Generator(5, 20<<20)
	if info, err := s.Put(ctx, r, -1, blob.Digest{}); err != nil || info.Digest != want {
		t.Fatalf("after thaw: put large: %v, %v", info, err)
	}
}

// TestDeadlinesKilledS3 kills a real MinIO server: every call fails as
// "object storage unreachable", classified by the S3 store itself, and
// the same store works again once the server is back.
func TestDeadlinesKilledS3(t *testing.T) {
	m := testenv.StartMinIO(t)
	backend, err := blob.NewS3(t.Context(), m.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	small := blobtest.Random(1, 1000)
	d, err := blob.PutBytes(ctx, backend, small)
	if err != nil {
		t.Fatal(err)
	}
	m.Kill()
	for _, s := range []struct {
		name  string
		store blob.Store
	}{
		{"s3", backend},
		{"s3 with deadlines", blob.WithDeadlines(backend, blob.Deadlines{Call: time.Second, Idle: 2 * time.Second,
			Fault: fault.ErrStorageUnavailable})},
	} {
		ops := []struct {
			name string
			f    func() error
		}{
			{"stat", func() error { _, err := s.store.Stat(ctx, d); return err }},
			{"get", func() error { rc, err := s.store.Get(ctx, d); closeIf(rc); return err }},
			{"put", func() error { _, err := blob.PutBytes(ctx, s.store, blobtest.Random(3, 1000)); return err }},
			{"delete", func() error { return s.store.Delete(ctx, d) }},
			{"list", func() error { return s.store.List(ctx, func(blob.Entry) error { return nil }) }},
			{"check", func() error { return s.store.Check(ctx) }},
		}
		for _, op := range ops {
			err, took := bounded(t, s.name+": "+op.name, op.f)
			t.Logf("%s: %s with the server killed: failed after %v: %v", s.name, op.name, took.Round(time.Millisecond), err)
			// A call may give up on its deadline before the S3 client
			// has given up retrying: either names the same cause.
			wantFault(t, s.name+": "+op.name, err, fault.ErrStorageUnavailable)
		}
	}
	m.Restart()
	if got, err := blob.ReadAll(ctx, backend, d, 1<<20); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("after restart: read %s: %v", d, err)
	}
}

func closeIf(rc io.ReadCloser) {
	if rc != nil {
		rc.Close()
	}
}

// slowReader sleeps before each Read.
type slowReader struct {
	r     io.Reader
	sleep time.Duration
}

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.sleep)
	return s.r.Read(p[:min(len(p), 64<<10)])
}

// TestDeadlinesCallerTime checks that the time callers take does not count
// against the store: a Put reading slow content, a reader read slowly and
// a List whose callback is slow all succeed though each takes longer than
// the idle deadline.
func TestDeadlinesCallerTime(t *testing.T) {
	const idle = 50 * time.Millisecond
	s := blob.WithDeadlines(newLocal(t), blob.Deadlines{Call: idle, Idle: idle})
	ctx := t.Context()
	b := blobtest.Random(7, 256<<10)
	info, err := s.Put(ctx, slowReader{r: bytes.NewReader(b), sleep: 3 * idle}, int64(len(b)), blob.Digest{})
	if err != nil {
		t.Fatalf("put of slow content: %v", err)
	}
	rc, err := s.Get(ctx, info.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(slowReader{r: rc, sleep: 3 * idle})
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("slow read: %v", err)
	}
	if _, err := blob.PutBytes(ctx, s, []byte("second")); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = s.List(ctx, func(blob.Entry) error {
		n++
		time.Sleep(3 * idle)
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("slow list: %d entries, %v", n, err)
	}
	// fn's own error is passed through as is.
	errStop := errors.New("stop")
	if err := s.List(ctx, func(blob.Entry) error { return errStop }); err != errStop {
		t.Fatalf("List returned %v, want fn's error", err)
	}
}

// TestLocalFullVolume fills the volume of a local store: Put fails as "no
// space left on the data volume", Check reports it, and both recover once
// space is freed, with nothing left behind.
func TestLocalFullVolume(t *testing.T) {
	vol := testenv.SmallVolume(t, 8<<20)
	l, err := blob.NewLocal(filepath.Join(vol.Dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	s := blob.WithDeadlines(l, blob.Deadlines{})
	ctx := t.Context()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check of an empty volume: %v", err)
	}
	vol.Fill()
	b := blobtest.Random(8, 256<<10)
	_, err = blob.PutBytes(ctx, s, b)
	wantFault(t, "put on a full volume", err, fault.ErrNoSpace)
	if got := fault.Cause(err); got != "no space left on the data volume" {
		t.Errorf("put on a full volume: cause %q", got)
	}
	wantFault(t, "check of a full volume", s.Check(ctx), fault.ErrNoSpace)
	if _, err := s.Stat(ctx, blob.Sum(b)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("stat after a failed put: %v, want not found", err)
	}
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "tmp"))
	if err != nil || len(entries) != 0 {
		t.Errorf("temporary files left by the failed put: %v, %v", entries, err)
	}

	vol.Release()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check after freeing space: %v", err)
	}
	d, err := blob.PutBytes(ctx, s, b)
	if err != nil {
		t.Fatalf("put after freeing space: %v", err)
	}
	if got, err := blob.ReadAll(ctx, s, d, 1<<20); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("read after freeing space: %v", err)
	}
}

// TestDeadlinesCanceled checks that a caller's own cancellation is not
// reported as a fault of the store.
func TestDeadlinesCanceled(t *testing.T) {
	s := blob.WithDeadlines(newLocal(t), blob.Deadlines{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Stat(ctx, blob.Sum(nil))
	if !errors.Is(err, context.Canceled) || fault.IsInfra(err) {
		t.Fatalf("Stat with a canceled context: %v (infra %v)", err, fault.IsInfra(err))
	}
}
