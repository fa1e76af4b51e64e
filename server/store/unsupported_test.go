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
	ctx := context.Background()
	const kid = "debian/12/x86_64/6.1.0-50-cloud-amd64"
	db, arts := verifyFixture(t, map[string]string{kid: "image-1"})
	if n, err := db.QueueVerifications(ctx); err != nil || n != 1 {
		t.Fatalf("queue: %d %v", n, err)
	}

	// Run the migration's Up section again on the populated database.
	raw, err := migrations.FS.ReadFile("00007_unsupported.sql")
	if err != nil {
		t.Fatal(err)
	}
	up, _, _ := strings.Cut(string(raw), "-- +goose Down")
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for stmt := range strings.SplitSeq(up, ";\n") {
		if strings.TrimSpace(stripComments(stmt)) == "" {
			continue
		}
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
	if _, err := db.db.ExecContext(ctx, `UPDATE artifacts SET state = 'running' WHERE id = ?`, arts[kid]); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishArtifact(ctx, arts[kid], ArtifactOutcome{Status: "unsupported", ManifestBlob: "m"}); err != nil {
		t.Fatal(err)
	}
	a, err := db.Artifact(ctx, arts[kid])
	if err != nil || a.Status != "unsupported" {
		t.Fatalf("artifact %+v %v", a, err)
	}
	if _, err := db.db.ExecContext(ctx, `UPDATE artifacts SET status = 'bogus' WHERE id = ?`, arts[kid]); err == nil {
		t.Error("the status CHECK constraint is gone")
	}
}

func stripComments(s string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
