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
		job, err := db.Claim(ctx)
		if err != nil || job.ID != b.ID || job.BundleBlob != "br1" || job.Attempts != 1 {
			t.Fatalf("claim: %+v %v", job, err)
		}
		if _, err := db.Claim(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("claim on empty queue: %v", err)
		}
		// A crash: the running build is queued again, then claimed again.
		if n, f, err := db.Recover(ctx, 3); err != nil || n != 1 || f != 0 {
			t.Fatalf("recover: %d %d %v", n, f, err)
		}
		job, err = db.Claim(ctx)
		if err != nil || job.Attempts != 2 {
			t.Fatalf("claim after recover: %+v %v", job, err)
		}
		if err := db.Finish(ctx, job.ID, Outcome{State: api.StateSucceeded, ObjectBlob: "obj", ObjectSize: 3, LogBlob: "log"}); err != nil {
			t.Fatal(err)
		}
		if err := db.Finish(ctx, job.ID, Outcome{State: api.StateFailed}); err == nil {
			t.Fatal("finishing a finished build succeeded")
		}

		// Same inputs under another program: a cache hit, not queued.
		addRev(t, db, "q", "r1")
		hit, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "q", Revision: "r1", Arch: "x86_64", CacheKey: "k1"})
		if err != nil || queued || hit.State != api.StateSucceeded || hit.CachedFrom != job.ID || hit.Object.Digest != "obj" {
			t.Fatalf("cache hit: %+v queued=%v err=%v", hit, queued, err)
		}
		// A new compiler (another key) rebuilds the same build row.
		re, queued, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k2"})
		if err != nil || !queued || re.ID != job.ID || re.State != api.StateQueued || re.Object != nil {
			t.Fatalf("rebuild: %+v queued=%v err=%v", re, queued, err)
		}
		refs, err := db.BlobRefs(ctx)
		if err != nil || len(refs) != 3 { // br1 (twice, deduplicated), obj, log of the cache hit
			t.Fatalf("blob refs: %v %v", refs, err)
		}
	})
}

func TestRecoverGivesUp(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		addRev(t, db, "p", "r1")
		db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k"})
		for range 3 {
			if _, err := db.Claim(ctx); err != nil {
				t.Fatal(err)
			}
			db.Recover(ctx, 3)
		}
		bs, _ := db.Builds(ctx, BuildFilter{})
		if bs[0].State != api.StateFailed || bs[0].ErrorKind != "internal" {
			t.Fatalf("build that crashed the server 3 times: %+v", bs[0])
		}
		// An internal failure is retried on the next push.
		_, queued, _ := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "r1", Arch: "x86_64", CacheKey: "k"})
		if !queued {
			t.Fatal("internal failure not retried")
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
					j, err := db.Claim(ctx)
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
