package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/quota"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}

type fixture struct {
	db     *store.DB
	blobs  blob.Store
	revs   []string // revision digests of program p, oldest first
	orphan blob.Digest
}

// newFixture stores program p with 6 revisions pushed by "pub" (each with
// a bundle blob and a build with an object and a log blob), one orphan
// blob, an assignment pinning the oldest revision and a host reporting
// the second oldest running.
func newFixture(t *testing.T, backend string) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db := storetest.Open(t, backend)
	bs, err := blob.NewLocal(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, blobs: bs}
	put := func(s string) string {
		d, err := blob.PutBytes(ctx, bs, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	if _, err := db.CreateToken(ctx, "pub", api.RolePublisher, "h"); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		digest := fmt.Sprintf("%064x", i+1)
		if _, err := db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: digest, Entry: "p.bpf.c",
			BundleBlob: put(fmt.Sprint("bundle ", i)), Size: 10, Files: 1, PushedBy: "pub"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: digest, Arch: "x86_64",
			CacheKey: fmt.Sprint("key", i)}); err != nil {
			t.Fatal(err)
		}
		job, err := db.Claim(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Finish(ctx, job.Lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: put(fmt.Sprint("object ", i)),
			ObjectSize: 8, LogBlob: put(fmt.Sprint("log ", i))}); err != nil {
			t.Fatal(err)
		}
		f.revs = append(f.revs, digest)
		time.Sleep(2 * time.Millisecond) // distinct created_at
	}
	d, err := blob.PutBytes(ctx, bs, []byte("orphan"))
	if err != nil {
		t.Fatal(err)
	}
	f.orphan = d
	if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Revision: f.revs[0]}, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RegisterHost(ctx, api.HostRegistration{Name: "h1", Kernel: "debian/12/x86_64/6.1.0-1-amd64"}, "x"); err != nil {
		t.Fatal(err)
	}
	if err := db.ReportHost(ctx, "h1", []api.HostProgram{{Program: "p", Revision: f.revs[1], State: api.HostProgramLoaded}}); err != nil {
		t.Fatal(err)
	}
	// A table another migration added names a blob in a column "blob".
	hdr := put("header")
	if _, _, err := db.PutHeaderSet(ctx, api.HeaderSet{Name: "h", Digest: "d", Size: 6},
		[]store.HeaderFile{{Name: "x.h", Blob: hdr, Size: 6}}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) collector(hook func(string) error) *Collector {
	q := quota.New(f.db, api.Quota{MaxRevisions: 2})
	return &Collector{DB: f.db, Blobs: f.blobs, Quotas: q, Grace: -time.Hour, Hook: hook,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// consistent checks that every blob a row names is stored.
func (f *fixture) consistent(t *testing.T, when string) {
	t.Helper()
	ctx := context.Background()
	refs, err := f.db.BlobRefSet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for r := range refs {
		d, err := blob.ParseDigest(r)
		if err != nil {
			t.Fatalf("%s: row names %q", when, r)
		}
		if _, err := f.blobs.Stat(ctx, d); err != nil {
			t.Fatalf("%s: a row names missing blob %s: %v", when, r[:12], err)
		}
	}
}

func (f *fixture) revisions(t *testing.T) map[string]bool {
	t.Helper()
	p, err := f.db.Program(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range p.Revisions {
		out[r.Digest] = true
	}
	return out
}

func (f *fixture) blobCount(t *testing.T) int {
	n := 0
	if err := f.blobs.List(context.Background(), func(blob.Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGC: revisions beyond the kept count go, except the pinned one and
// the one a host runs; their blobs and the orphan go; a dry run deletes
// nothing; a second run finds nothing.
func TestGC(t *testing.T) {
	for _, backend := range storetest.Backends {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, backend)
			ctx := context.Background()
			before := f.blobCount(t)
			dry, err := f.collector(nil).Run(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if dry.Revisions != 2 || dry.Builds != 2 || dry.Blobs != 1 || f.blobCount(t) != before || len(f.revisions(t)) != 6 {
				t.Fatalf("dry run: %+v, %d blobs of %d", dry, f.blobCount(t), before)
			}
			rep, err := f.collector(nil).Run(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			// Kept: the newest 2 (4, 5), the pinned 0 and the running 1.
			revs := f.revisions(t)
			if rep.Revisions != 2 || len(revs) != 4 || !revs[f.revs[0]] || !revs[f.revs[1]] || !revs[f.revs[4]] || !revs[f.revs[5]] {
				t.Fatalf("gc: %+v, revisions left %v", rep, revs)
			}
			// 2 revisions x 3 blobs, and the orphan.
			if rep.Blobs != 7 || f.blobCount(t) != before-7 {
				t.Fatalf("gc deleted %d blobs (%d left of %d)", rep.Blobs, f.blobCount(t), before)
			}
			if _, err := f.blobs.Stat(ctx, f.orphan); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("orphan: %v", err)
			}
			f.consistent(t, "after gc")
			again, err := f.collector(nil).Run(ctx, false)
			if err != nil || again.Revisions != 0 || again.Blobs != 0 {
				t.Fatalf("second gc: %+v %v", again, err)
			}
		})
	}
}

// TestGCGrace: an unnamed blob younger than the grace period stays (a
// push writes its blobs before its rows).
func TestGCGrace(t *testing.T) {
	for _, backend := range storetest.Backends {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, backend)
			c := f.collector(nil)
			c.Grace = time.Hour
			rep, err := c.Run(context.Background(), false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Blobs != 0 {
				t.Fatalf("gc deleted %d young blobs", rep.Blobs)
			}
			f.consistent(t, "after gc with grace")
		})
	}
}

// TestGCCrash: a crash at every step of a gc (the hook failing there)
// leaves no row naming a missing blob, and the next run completes the
// work.
func TestGCCrash(t *testing.T) {
	for _, backend := range storetest.Backends {
		t.Run(backend, func(t *testing.T) {
			steps := []struct {
				step string
				nth  int
			}{{StepRowsDeleted, 1}, {StepCommitted, 1}, {StepDeleteBlob, 1}, {StepBlobDeleted, 1}, {StepDeleteBlob, 4},
				{StepBlobDeleted, 7}}
			for _, s := range steps {
				t.Run(fmt.Sprintf("%s-%d", s.step, s.nth), func(t *testing.T) {
					f := newFixture(t, backend)
					ctx := context.Background()
					crash := errors.New("crash")
					n := 0
					_, err := f.collector(func(step string) error {
						if step == s.step {
							if n++; n == s.nth {
								return crash
							}
						}
						return nil
					}).Run(ctx, false)
					if !errors.Is(err, crash) {
						t.Fatalf("the hook did not stop gc: %v", err)
					}
					f.consistent(t, "after the crash")
					if s.step == StepRowsDeleted && len(f.revisions(t)) != 6 {
						t.Fatalf("a crash before commit deleted revisions")
					}
					if _, err := f.collector(nil).Run(ctx, false); err != nil {
						t.Fatal(err)
					}
					f.consistent(t, "after the next gc")
					if len(f.revisions(t)) != 4 || f.blobCount(t) != 4*3+1 {
						t.Fatalf("after the next gc: %d revisions, %d blobs", len(f.revisions(t)), f.blobCount(t))
					}
				})
			}
		})
	}
}
