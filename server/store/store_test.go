package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/migrations"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestMigrate: every migration applies to a fresh database, and opening it
// again applies none.
func TestMigrate(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			url := "sqlite:" + filepath.Join(t.TempDir(), "test.db")
			if backend == "postgres" {
				url = testenv.Postgres(t)
			}
			var logs [2]strings.Builder
			for i := range logs {
				db, err := Open(context.Background(), url, WithLogger(slog.New(slog.NewTextHandler(&logs[i], nil))))
				if err != nil {
					t.Fatal(err)
				}
				if err := db.Ping(context.Background()); err != nil {
					t.Fatal(err)
				}
				db.Close()
			}
			files, _ := fs.Glob(migrations.FS, "*.sql")
			if n := strings.Count(logs[0].String(), "applied migration"); n != len(files) {
				t.Errorf("first open applied %d migrations, want %d:\n%s", n, len(files), logs[0].String())
			}
			if strings.Contains(logs[1].String(), "applied migration") {
				t.Errorf("second open applied migrations:\n%s", logs[1].String())
			}
		})
	}
}

// each runs fn on a new SQLite and a new PostgreSQL database: it is
// storetest.Each, for the tests of package store itself (storetest
// imports store).
func each(t *testing.T, fn func(t *testing.T, db *DB)) {
	t.Helper()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) { fn(t, openTest(t, backend)) })
	}
}

// openTest opens a new, empty database of backend ("sqlite" or
// "postgres"), closed when the test ends.
func openTest(t *testing.T, backend string) *DB {
	t.Helper()
	url := "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	if backend == "postgres" {
		// A copy of a database migrated once (TestMigrate migrates fresh
		// ones).
		url = testenv.PostgresTemplate(t, "store", func(url string) error {
			db, err := Open(context.Background(), url, WithLogger(quiet))
			if err != nil {
				return err
			}
			return db.Close()
		})
	}
	db, err := Open(context.Background(), url, WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func addRev(t *testing.T, db *DB, prog, digest string) {
	t.Helper()
	if _, err := db.AddRevision(context.Background(), RevisionInput{Program: prog, Digest: digest, Entry: "p.bpf.c",
		BundleBlob: "b" + digest, Size: 10, Files: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestQueueLifecycle(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		addRev(t, db, "p", "r1")
		b, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k1"})
		if err != nil || !queued || b.State != api.StateQueued {
			t.Fatalf("first ensure: %+v queued=%v err=%v", b, queued, err)
		}
		// The same build again is not queued twice.
		b2, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k1"})
		if err != nil || queued || b2.ID != b.ID {
			t.Fatalf("second ensure: %+v queued=%v err=%v", b2, queued, err)
		}
		// A worker claims it and dies: its lease runs out (a TTL in the past).
		dead := ClaimOptions{Owner: "dead", TTL: -time.Millisecond, MaxAttempts: 3}
		lost, err := db.Claim(ctx, dead)
		if err != nil || lost.ID != b.ID || lost.BundleBlob != "br1" || lost.Attempts != 1 || lost.Expired {
			t.Fatalf("claim: %+v %v", lost, err)
		}
		// Another worker claims it again, no restart needed.
		job, err := db.Claim(ctx, testClaim)
		if err != nil || job.ID != b.ID || job.Attempts != 2 || !job.Expired {
			t.Fatalf("claim after the lease ran out: %+v %v", job, err)
		}
		if _, err := db.Claim(ctx, testClaim); !errors.Is(err, ErrNotFound) {
			t.Fatalf("claim on empty queue: %v", err)
		}
		// The dead worker's lease is lost: it can neither renew nor finish.
		if err := db.RenewLease(ctx, lost.Lease, time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew a lost lease: %v", err)
		}
		if _, err := db.Finish(ctx, lost.Lease, Outcome{State: api.StateFailed}); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("finish with a lost lease: %v", err)
		}
		if err := db.RenewLease(ctx, job.Lease, time.Minute); err != nil {
			t.Fatal(err)
		}
		putKernel(t, db, "debian/12/x86_64/6.1.0-1")
		putKernel(t, db, "debian/12/arm64/6.1.0-1")
		n, err := db.Finish(ctx, job.Lease, Outcome{State: api.StateSucceeded, ObjectBlob: "obj", ObjectSize: 3, LogBlob: "log"})
		if err != nil || n != 1 {
			t.Fatalf("finish: %d relocations queued, %v", n, err)
		}
		if _, err := db.Finish(ctx, job.Lease, Outcome{State: api.StateFailed}); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("finishing a finished build: %v", err)
		}

		// Same inputs under another program: a cache hit, not queued, with the
		// relocations of the build it copies.
		addRev(t, db, "q", "r1")
		hit, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "q", Revision: "r1", Arch: "x86_64", CacheKey: "k1"})
		if err != nil || queued || hit.State != api.StateSucceeded || hit.CachedFrom != job.ID || hit.Object.Digest != "obj" {
			t.Fatalf("cache hit: %+v queued=%v err=%v", hit, queued, err)
		}
		for _, id := range []int64{job.ID, hit.ID} {
			as, err := db.Artifacts(ctx, ArtifactFilter{BuildID: id})
			if err != nil || len(as) != 1 || as[0].Kernel != "debian/12/x86_64/6.1.0-1" || as[0].State != api.ArtifactQueued {
				t.Fatalf("artifacts of build %d: %+v %v", id, as, err)
			}
		}
		// A new compiler (another key) rebuilds the same build row.
		re, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k2"})
		if err != nil || !queued || re.ID != job.ID || re.State != api.StateQueued || re.Object != nil {
			t.Fatalf("rebuild: %+v queued=%v err=%v", re, queued, err)
		}
		refs, err := db.BlobRefs(ctx)
		if err != nil || len(refs) != 5 { // br1 (twice, deduplicated), obj, log of the cache hit, 2 kernels' BTF
			t.Fatalf("blob refs: %v %v", refs, err)
		}
	})
}

// TestGiveUpExpired: a build whose worker died on every attempt fails
// (kind infra) instead of being claimed again, and is retried on the next
// push.
func TestGiveUpExpired(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		addRev(t, db, "p", "r1")
		db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k"})
		dead := ClaimOptions{Owner: "dead", TTL: -time.Millisecond, MaxAttempts: 3}
		for range 3 {
			if _, err := db.Claim(ctx, dead); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.Claim(ctx, dead); !errors.Is(err, ErrNotFound) {
			t.Fatalf("claimed past the attempts cap: %v", err)
		}
		if n, err := db.GiveUpExpired(ctx, QueueBuilds, 3); err != nil || n != 1 {
			t.Fatalf("give up: %d %v", n, err)
		}
		bs, _ := db.Builds(ctx, BuildFilter{})
		if bs[0].State != api.StateFailed || bs[0].ErrorKind != ErrorKindInfra || !strings.Contains(bs[0].Error, "gave up after 3 attempts") {
			t.Fatalf("build whose worker died 3 times: %+v", bs[0])
		}
		// An infrastructure failure is never a cache hit, and is retried on
		// the next push.
		addRev(t, db, "q", "r1")
		if _, queued, _ := db.EnsureBuild(ctx, BuildInput{Program: "q", Revision: "r1", Arch: "x86_64", CacheKey: "k"}); !queued {
			t.Fatal("infra failure served as a cache hit")
		}
		_, queued, _ := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k"})
		if !queued {
			t.Fatal("infra failure not retried")
		}
	})
}

// TestConcurrentClaims: every build is claimed exactly once.
func TestConcurrentClaims(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		addRev(t, db, "p", "r1")
		const n = 40
		for i := range n {
			db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", Flags: []string{string(rune('A' + i))}, CacheKey: string(rune('A' + i))})
		}
		var mu sync.Mutex
		seen := map[int64]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					j, err := db.Claim(ctx, testClaim)
					if errors.Is(err, ErrNotFound) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seen[j.ID]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(seen) != n {
			t.Fatalf("claimed %d builds, want %d", len(seen), n)
		}
		for id, c := range seen {
			if c != 1 {
				t.Errorf("build %d claimed %d times", id, c)
			}
		}
	})
}

func TestTokens(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		if has, _ := db.HasTokens(ctx); has {
			t.Fatal("fresh db has tokens")
		}
		if _, err := db.CreateToken(ctx, "a", api.RoleAdmin, "h1"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateToken(ctx, "a", api.RoleReader, "h2"); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate name: %v", err)
		}
		if tok, err := db.TokenByHash(ctx, "h1"); err != nil || tok.Name != "a" {
			t.Fatalf("by hash: %+v %v", tok, err)
		}
		if err := db.RevokeToken(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.TokenByHash(ctx, "h1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoked token found: %v", err)
		}
	})
}

// testClaim are the claim terms of tests that claim by hand.
var testClaim = ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3}
