package store

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/migrations"
)

// TestMigrationsKeepJobs (SQLite: a database of an older version, before
// PostgreSQL): the migrations that rebuild tables to change a CHECK constraint (00007: artifacts, for the status 'unsupported'; 00010:
// builds, for the failure kind 'infra') keep the rows of the tables that
// reference them, which dropping the old table cascades away, and 00010
// turns the old kind 'internal' into 'infra'.
func TestMigrationsKeepJobs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := sql.Open("sqlite3", "file:"+path+"?_foreign_keys=on&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	sub, _ := fs.Sub(migrations.FS, ".")
	p, err := goose.NewProvider(goose.DialectSQLite3, raw, dialectFS{fsys: sub})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	for _, q := range []string{
		`INSERT INTO programs (id, name, created_at, updated_at) VALUES (1, 'p', ?, ?)`,
		`INSERT INTO revisions (id, program_id, digest, entry, bundle_blob, size, files, created_at) VALUES (1, 1, 'rev1', 'p.bpf.c', 'bundle', 1, 1, ?)`,
		`INSERT INTO kernels (id, kid, distro, version, arch, release, btf_blob, btf_size, image_blob, created_at) VALUES (1, 'debian/12/x86_64/6.1.0-1', 'debian', '12', 'x86_64', '6.1.0-1', 'btf', 1, 'image', ?)`,
		`INSERT INTO builds (id, revision_id, arch, flags, cache_key, state, object_blob, created_at) VALUES (1, 1, 'x86_64', '[]', 'k', 'succeeded', 'obj', ?)`,
		`INSERT INTO builds (id, revision_id, arch, flags, cache_key, state, error_kind, error, cached_from, created_at) VALUES (2, 1, 'x86_64', '["-DX"]', 'k2', 'failed', 'internal', 'disk full', 1, ?)`,
		`INSERT INTO artifacts (id, build_id, kernel_id, state, status, manifest_blob, relocated_blob, created_at) VALUES (1, 1, 1, 'done', 'ok', 'm', 'rel', ?)`,
		`INSERT INTO verifications (id, artifact_id, kernel_image, state, result, created_at) VALUES (1, 1, 'image', 'done', 'verified', ?)`,
	} {
		var args []any
		for range countParams(q) {
			args = append(args, t0)
		}
		if _, err := raw.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	as, err := db.Artifacts(ctx, ArtifactFilter{})
	if err != nil || len(as) != 1 || as[0].State != api.ArtifactDone || as[0].Manifest.Digest != "m" {
		t.Fatalf("artifacts after the migrations: %+v %v", as, err)
	}
	vs, err := db.Verifications(ctx, VerificationFilter{})
	if err != nil || len(vs) != 1 || vs[0].Result != api.VerificationVerified {
		t.Fatalf("verifications after the migrations: %+v %v", vs, err)
	}
	b, err := db.Build(ctx, 2)
	if err != nil || b.ErrorKind != ErrorKindInfra || b.CachedFrom != 1 {
		t.Fatalf("build failed for an internal reason: %+v %v", b, err)
	}
	for _, q := range []string{
		`UPDATE artifacts SET status = 'unsupported' WHERE id = 1`,
	} {
		if _, err := db.db.ExecContext(ctx, q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	for _, q := range []string{
		`UPDATE artifacts SET status = 'bogus' WHERE id = 1`,
		`UPDATE builds SET error_kind = 'internal' WHERE id = 2`,
		`INSERT INTO artifacts (build_id, kernel_id, state, created_at) VALUES (99, 1, 'queued', '2026-01-01')`,
	} {
		if _, err := db.db.ExecContext(ctx, q); err == nil {
			t.Errorf("%s: accepted (a constraint is gone)", q)
		}
	}
	// The foreign keys still cascade: deleting the build deletes its
	// artifact and that one's verification.
	if _, err := db.db.ExecContext(ctx, `DELETE FROM builds WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	var n int
	db.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM artifacts) + (SELECT COUNT(*) FROM verifications)`).Scan(&n)
	if n != 0 {
		t.Errorf("%d rows left after deleting their build", n)
	}
}

func countParams(q string) int {
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
		}
	}
	return n
}
