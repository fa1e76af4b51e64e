package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// TestQuotasAndUsage: quota overrides set, kept and cleared; bytes and
// builds counted per pusher.
func TestQuotasAndUsage(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		if _, err := db.CreateToken(ctx, "pub", api.RolePublisher, "h"); err != nil {
			t.Fatal(err)
		}
		if err := db.SetQuotaOverrides(ctx, "pub", api.Quota{MaxBytes: 100, MaxRevisions: 5}); err != nil {
			t.Fatal(err)
		}
		if err := db.SetQuotaOverrides(ctx, "pub", api.Quota{MaxRevisions: -1, MaxBuildsPerHour: 7}); err != nil {
			t.Fatal(err)
		}
		q, err := db.QuotaOverrides(ctx, "pub")
		if err != nil || q != (api.Quota{MaxBytes: 100, MaxBuildsPerHour: 7}) {
			t.Fatalf("overrides: %+v %v", q, err)
		}
		if err := db.SetQuotaOverrides(ctx, "nobody", api.Quota{MaxBytes: 1}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
		if err := db.SetQuotaOverrides(ctx, "nobody", api.Quota{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown token, nothing to set: %v", err)
		}

		start := time.Now().UTC().Add(-time.Second)
		for _, rev := range []string{"r1", "r2"} {
			if _, err := db.AddRevision(ctx, RevisionInput{Program: "p", Digest: rev, Entry: "p.bpf.c", BundleBlob: "b" + rev,
				Size: 10, Files: 1, PushedBy: "pub"}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k1"}); err != nil {
			t.Fatal(err)
		}
		job, err := db.Claim(ctx, testClaim)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Finish(ctx, job.Lease, Outcome{State: api.StateSucceeded, ObjectBlob: "o", ObjectSize: 1000, UsedPCH: true}); err != nil {
			t.Fatal(err)
		}
		// A cache hit: another revision, the same key. Its object is not
		// counted twice.
		b, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r2", Arch: "x86_64", CacheKey: "k1"})
		if err != nil || queued || b.CachedFrom != job.ID || !b.UsedPCH || b.State != api.StateSucceeded {
			t.Fatalf("cache hit: %+v queued=%v %v", b, queued, err)
		}
		if n, err := db.BytesStored(ctx, "pub"); err != nil || n != 1020 {
			t.Fatalf("bytes stored: %d %v", n, err)
		}
		if n, err := db.BuildsSince(ctx, "pub", start); err != nil || n != 1 {
			t.Fatalf("builds since: %d %v", n, err)
		}
		if n, err := db.BuildsSince(ctx, "pub", time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Fatalf("builds since an hour from now: %d %v", n, err)
		}
	})
}

// TestBlobRefsAndGC: the blob references found from the schema, the
// revisions in use and a revision collection agree on both dialects.
func TestBlobRefsAndGC(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		putKernel(t, db, "debian/12/x86_64/6.1.0-1-amd64")
		buildAndRelocate(t, db, "p", "r1", false)
		buildAndRelocate(t, db, "p", "r2", false)
		if q, r, err := db.QueueDepth(ctx); err != nil || q != 0 || r != 0 {
			t.Fatalf("queue depth: %d %d %v", q, r, err)
		}
		counts, err := db.ArtifactCounts(ctx)
		if err != nil || counts["debian/12/x86_64/6.1.0-1-amd64"] != 2 {
			t.Fatalf("artifact counts: %v %v", counts, err)
		}
		refs, err := db.BlobRefSet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"br1", "br2", "obj-r1", "m-r2", "btf-debian/12/x86_64/6.1.0-1-amd64"} {
			if !refs[want] {
				t.Errorf("blob %s not among the references %v", want, refs)
			}
		}
		if ok, err := db.BlobReferenced(ctx, "obj-r2"); err != nil || !ok {
			t.Fatalf("obj-r2 referenced: %v %v", ok, err)
		}
		if ok, err := db.BlobReferenced(ctx, "nothing"); err != nil || ok {
			t.Fatalf("unknown blob referenced: %v %v", ok, err)
		}

		if _, err := db.RegisterHost(ctx, api.HostRegistration{Name: "h1", Kernel: "debian/12/x86_64/6.1.0-1-amd64"}, ""); err != nil {
			t.Fatal(err)
		}
		if err := db.ReportHost(ctx, "h1", []api.HostProgram{{Program: "p", Revision: "r1", Desired: "r2"}}); err != nil {
			t.Fatal(err)
		}
		inUse, err := db.InUseRevisions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for r := range inUse {
			got = append(got, r)
		}
		sort.Strings(got)
		if !slices.Equal(got, []string{"r1", "r2"}) {
			t.Fatalf("revisions in use: %v", got)
		}

		res, err := db.CollectRevisions(ctx, RevisionGC{Keep: func(string) int64 { return 1 }})
		if err != nil || res != (RevisionGCResult{Revisions: 1, Builds: 1, Artifacts: 1}) {
			t.Fatalf("collect: %+v %v", res, err)
		}
		if ok, err := db.BlobReferenced(ctx, "obj-r1"); err != nil || ok {
			t.Fatalf("obj-r1 still referenced after the collection: %v %v", ok, err)
		}
	})
}

// TestIdentityAfterRebuild: ids keep growing after a table rebuild copied
// rows with their ids (PostgreSQL's identity sequences are resynced).
func TestIdentityAfterRebuild(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		if _, err := db.CreateToken(ctx, "a", api.RoleAdmin, "h1"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.db.ExecContext(ctx, `INSERT INTO tokens (id, name, role, hash, created_at) VALUES (41, 'b', 'reader', 'h2', ?)`,
			now()); err != nil {
			t.Fatal(err)
		}
		if db.postgres {
			if err := db.resyncIdentities(ctx); err != nil {
				t.Fatal(err)
			}
		}
		tok, err := db.CreateToken(ctx, "c", api.RoleReader, "h3")
		if err != nil || tok.ID != 42 {
			t.Fatalf("token after explicit id 41: %+v %v", tok, err)
		}
	})
}

// TestConcurrentFirstPushes: pushes racing to create one program, and
// builds racing to create one build, all succeed and agree (on PostgreSQL
// the losers' transactions are run again).
func TestConcurrentFirstPushes(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = db.AddRevision(ctx, RevisionInput{Program: "p", Digest: fmt.Sprint("r", i), Entry: "p.bpf.c",
					BundleBlob: "b", Size: 1, Files: 1})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("push %d: %v", i, err)
			}
		}
		if revs, err := db.Revisions(ctx, "p"); err != nil || len(revs) != n {
			t.Fatalf("revisions: %d %v", len(revs), err)
		}
		var (
			ids    [n]int64
			queued [n]bool
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b api.Build
				b, queued[i], errs[i] = db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r0", Arch: "x86_64", CacheKey: "k"})
				ids[i] = b.ID
			}()
		}
		wg.Wait()
		nq := 0
		for i := range n {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Errorf("ensure %d: build %d (first: %d) %v", i, ids[i], ids[0], errs[i])
			}
			if queued[i] {
				nq++
			}
		}
		if nq != 1 {
			t.Errorf("%d of the racing calls queued the build, want 1", nq)
		}
	})
}

// TestRevisionPrefix: a revision is found by a unique prefix in any case,
// the same way on both dialects (SQLite's LIKE ignores case, PostgreSQL's
// does not).
func TestRevisionPrefix(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		addRev(t, db, "p", "abcdef01")
		addRev(t, db, "p", "abcd9902")
		if d, _, _, err := db.RevisionBlob(ctx, "p", "ABCDEF"); err != nil || d != "abcdef01" {
			t.Fatalf("upper-case prefix: %q %v", d, err)
		}
		if _, _, _, err := db.RevisionBlob(ctx, "p", "abcd"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ambiguous prefix: %v", err)
		}
		if _, _, _, err := db.RevisionBlob(ctx, "p", "ab_d"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a LIKE wildcard in the prefix: %v", err)
		}
	})
}
