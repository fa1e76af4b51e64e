package store

import (
	"context"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/migrations"
)

// TestUnsupportedStatus: an artifact can be unsupported, and migration
// 00007, which rebuilds the artifacts table for it, keeps the
// verifications that reference the artifacts.
func TestUnsupportedStatus(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		const kid = "debian/12/x86_64/6.1.0-50-cloud-amd64"
		arts := verifyFixture(t, db, map[string]string{kid: "image-1"})
		if n, err := db.QueueVerifications(ctx); err != nil || n != 0 { // queued as the relocation finished
			t.Fatalf("queue: %d %v", n, err)
		}

		// Run the migration's Up section again on the populated database.
		raw, err := migrations.FS.ReadFile("00007_unsupported.sql")
		if err != nil {
			t.Fatal(err)
		}
		raw, err = translate(raw, db.postgres)
		if err != nil {
			t.Fatal(err)
		}
		up, _, _ := strings.Cut(string(raw), "-- +goose Down")
		tx, err := db.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range statements(up) {
			if _, err := tx.tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		// The columns later migrations added (00010: leases) come back.
		for _, stmt := range []string{`ALTER TABLE artifacts ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''`,
			`ALTER TABLE artifacts ADD COLUMN lease_expires TIMESTAMP`, `ALTER TABLE artifacts ADD COLUMN not_before TIMESTAMP`} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM verifications WHERE artifact_id = ?`, arts[kid]).Scan(&n); err != nil || n != 1 {
			t.Fatalf("verifications after the rebuild: %d %v", n, err)
		}

		// Relocate again, unsupported this time.
		if _, err := db.db.ExecContext(ctx, `UPDATE artifacts SET state = 'queued' WHERE id = ?`, arts[kid]); err != nil {
			t.Fatal(err)
		}
		aj, err := db.ClaimArtifact(ctx, testClaim, "")
		if err != nil || aj.ID != arts[kid] {
			t.Fatalf("claim: %+v %v", aj, err)
		}
		if err := db.FinishArtifact(ctx, aj.Lease, ArtifactOutcome{Status: "unsupported", ManifestBlob: "m"}); err != nil {
			t.Fatal(err)
		}
		a, err := db.Artifact(ctx, arts[kid])
		if err != nil || a.Status != "unsupported" {
			t.Fatalf("artifact %+v %v", a, err)
		}
		if _, err := db.db.ExecContext(ctx, `UPDATE artifacts SET status = 'bogus' WHERE id = ?`, arts[kid]); err == nil {
			t.Error("the status CHECK constraint is gone")
		}
		// New rows get new ids (on PostgreSQL, Open resyncs the identity
		// sequences after migrating, as here).
		if db.postgres {
			if err := db.resyncIdentities(ctx); err != nil {
				t.Fatal(err)
			}
		}
		putKernel(t, db, "debian/12/x86_64/6.12.1-cloud-amd64") // queues its relocation
		if as, err := db.Artifacts(ctx, ArtifactFilter{BuildID: a.BuildID}); err != nil || len(as) != 2 {
			t.Fatalf("artifacts with a new kernel: %d %v", len(as), err)
		}
		// The verifications' foreign key names the new table: deleting the
		// artifact deletes its verification.
		if _, err := db.db.ExecContext(ctx, `DELETE FROM artifacts WHERE id = ?`, arts[kid]); err != nil {
			t.Fatal(err)
		}
		if err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM verifications`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("verifications after deleting their artifact: %d %v", n, err)
		}
	})
}

// statements splits a goose migration section into statements: each ends
// with a line ending in ";", or is a StatementBegin ... StatementEnd block.
func statements(sql string) []string {
	var (
		out   []string
		cur   strings.Builder
		block bool
	)
	for l := range strings.SplitSeq(sql, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case trimmed == "-- +goose StatementBegin":
			block = true
			continue
		case trimmed == "-- +goose StatementEnd":
			block = false
			out = append(out, cur.String())
			cur.Reset()
			continue
		case strings.HasPrefix(trimmed, "--") || trimmed == "":
			continue
		}
		cur.WriteString(l + "\n")
		if !block && strings.HasSuffix(trimmed, ";") {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	return out
}
