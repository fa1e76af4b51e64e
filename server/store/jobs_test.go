package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// TestRetryAndRelease: a job failed for an infrastructure reason waits
// for its not_before; a job given back on shutdown keeps its attempts.
func TestRetryAndRelease(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		addRev(t, db, "p", "r1")
		for _, k := range []string{"a", "b"} {
			db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", Flags: []string{k}, CacheKey: k})
		}
		a, err := db.Claim(ctx, testClaim)
		if err != nil {
			t.Fatal(err)
		}
		b, err := db.Claim(ctx, testClaim)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Retry(ctx, a.Lease, "will retry: object storage unreachable", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := db.Retry(ctx, a.Lease, "twice", time.Now()); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("retry without the lease: %v", err)
		}
		bb, _ := db.Build(ctx, a.ID)
		if bb.State != api.StateQueued || bb.Error != "will retry: object storage unreachable" {
			t.Fatalf("retried build: %+v", bb)
		}
		if err := db.Release(ctx, b.Lease); err != nil {
			t.Fatal(err)
		}
		// a waits for its backoff; b is claimable again, its attempt uncounted.
		j, err := db.Claim(ctx, testClaim)
		if err != nil || j.ID != b.ID || j.Attempts != 1 {
			t.Fatalf("claim after release: %+v %v", j, err)
		}
		if _, err := db.Claim(ctx, testClaim); !errors.Is(err, ErrNotFound) {
			t.Fatalf("claimed a build before its not_before: %v", err)
		}
		if err := db.Retry(ctx, j.Lease, "again", time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if j, err := db.Claim(ctx, testClaim); err != nil || j.ID != b.ID || j.Attempts != 2 {
			t.Fatalf("claim after the backoff: %+v %v", j, err)
		}
	})
}

// TestKernelImportQueuesJobs: storing a kernel queues, in the same
// transaction, the relocation of the latest revision of every program;
// the sweep repairs relocations missing from older data and nothing else.
func TestKernelImportQueuesJobs(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		buildAndRelocate(t, db, "p", "r1", false)
		buildAndRelocate(t, db, "p", "r2", false)
		_, _, queued, err := db.PutKernel(ctx, Kernel{KID: "debian/12/x86_64/6.1.0-9", Distro: "debian", Version: "12",
			Arch: "x86_64", Release: "6.1.0-9", BTFBlob: "btf-9", BTFSize: 1}, false)
		if err != nil || queued != 1 {
			t.Fatalf("import: %d queued, %v", queued, err)
		}
		as, _ := db.Artifacts(ctx, ArtifactFilter{Kernel: "debian/12/x86_64/6.1.0-9"})
		if len(as) != 1 || as[0].Revision != "r2" || as[0].State != api.ArtifactQueued {
			t.Fatalf("artifacts of the new kernel: %+v", as)
		}
		if n, err := db.QueueMissingArtifacts(ctx); err != nil || n != 0 {
			t.Fatalf("sweep with nothing missing: %d %v", n, err)
		}
		// Fan-out lost by an older version: the sweep puts it back.
		if _, err := db.db.ExecContext(ctx, `DELETE FROM artifacts`); err != nil {
			t.Fatal(err)
		}
		// r1 and r2 existed before 6.1.0-9: each gets nothing for it but r2,
		// the latest; no kernel existed before them, so that's all.
		if n, err := db.QueueMissingArtifacts(ctx); err != nil || n != 1 {
			t.Fatalf("sweep: %d %v", n, err)
		}
	})
}
