package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bpfarm/bpfarm/api"
)

// blobRefQuery returns a query selecting every blob digest any row names:
// every column named "blob" or ending in "_blob" in every table (the schema's
// convention for columns naming a blob), plus verifications.kernel_image.
// Discovering the columns from the schema keeps garbage collection safe
// when a migration adds a table naming blobs.
func (d *DB) blobRefQuery(ctx context.Context) (string, error) {
	const isBlob = `(%[1]s = 'blob' OR %[1]s LIKE '%%\_blob' ESCAPE '\' OR (%[2]s = 'verifications' AND %[1]s = 'kernel_image'))`
	q := `SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND ` + fmt.Sprintf(isBlob, "p.name", "m.name") + `
		ORDER BY m.name, p.name`
	if d.postgres {
		q = `SELECT c.table_name, c.column_name FROM information_schema.columns c
			JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
			WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
				AND ` + fmt.Sprintf(isBlob, "c.column_name", "c.table_name") + `
			ORDER BY c.table_name, c.column_name`
	}
	rows, err := d.db.QueryContext(ctx, q)
	if err != nil {
		return "", fmt.Errorf("blob columns: %w", err)
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			return "", fmt.Errorf("blob columns: %w", err)
		}
		parts = append(parts, fmt.Sprintf(`SELECT "%s" AS d FROM "%s" WHERE "%s" != ''`, col, table, col))
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("blob columns: %w", err)
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("blob columns: none found")
	}
	return strings.Join(parts, " UNION "), nil
}

// BlobRefSet returns every blob digest the database names.
func (d *DB) BlobRefSet(ctx context.Context) (map[string]bool, error) {
	q, err := d.blobRefQuery(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := d.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("blob refs: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("blob refs: %w", err)
		}
		out[s] = true
	}
	return out, rows.Err()
}

// BlobReferenced reports whether any row names blob digest now.
func (d *DB) BlobReferenced(ctx context.Context, digest string) (bool, error) {
	q, err := d.blobRefQuery(ctx)
	if err != nil {
		return false, err
	}
	var n int
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+q+`) refs WHERE d = ?`, digest).Scan(&n); err != nil {
		return false, fmt.Errorf("blob %s referenced: %w", short(digest), err)
	}
	return n > 0, nil
}

// RevisionGC says which revisions garbage collection removes.
type RevisionGC struct {
	// Keep returns how many revisions of each program to keep for a
	// token's pushes (the newest ones); at least 1 is kept.
	Keep func(token string) int64
	// Protected holds revision digests in use (assignments, hosts'
	// current and desired states): never removed.
	Protected map[string]bool
	DryRun    bool
	// Hook, when set, runs inside the transaction just before it commits;
	// an error aborts the transaction (tests simulate crashes with it).
	Hook func() error
}

// RevisionGCResult counts what a revision collection removed.
type RevisionGCResult struct {
	Revisions, Builds, Artifacts int
}

// CollectRevisions deletes, in one transaction, the revisions of every
// program beyond the newest Keep(pusher) ones of each pusher, except
// protected ones, with their builds, artifacts and verifications. Blobs
// are left to the caller (delete them only after this committed).
func (d *DB) CollectRevisions(ctx context.Context, g RevisionGC) (RevisionGCResult, error) {
	var res RevisionGCResult
	err := d.tx(ctx, func(tx *sqlTx) error {
		res = RevisionGCResult{}
		rows, err := tx.QueryContext(ctx, `SELECT id, digest, pushed_by, ROW_NUMBER() OVER (
				PARTITION BY program_id, pushed_by ORDER BY created_at DESC, id DESC)
			FROM revisions`)
		if err != nil {
			return err
		}
		keep := map[string]int64{}
		var ids []any
		for rows.Next() {
			var (
				id     int64
				digest string
				by     string
				rn     int64
			)
			if err := rows.Scan(&id, &digest, &by, &rn); err != nil {
				rows.Close()
				return err
			}
			k, ok := keep[by]
			if !ok {
				k = max(g.Keep(by), 1)
				keep[by] = k
			}
			if rn > k && !g.Protected[digest] {
				ids = append(ids, id)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		in := "(" + strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",") + ")"
		res.Revisions = len(ids)
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE revision_id IN `+in, ids...).
			Scan(&res.Builds); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM artifacts a JOIN builds b ON b.id = a.build_id
			WHERE b.revision_id IN `+in, ids...).Scan(&res.Artifacts); err != nil {
			return err
		}
		if g.DryRun {
			return nil
		}
		// Foreign keys cascade: builds, artifacts, verifications.
		if _, err := tx.ExecContext(ctx, `DELETE FROM revisions WHERE id IN `+in, ids...); err != nil {
			return err
		}
		if g.Hook != nil {
			return g.Hook()
		}
		return nil
	})
	if err != nil {
		return RevisionGCResult{}, fmt.Errorf("collect revisions: %w", err)
	}
	return res, nil
}

// InUseRevisions returns the revision digests assignments pin and hosts
// report running or should run (their desired state): garbage collection
// keeps them.
func (d *DB) InUseRevisions(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	pinned, err := queryList(ctx, d.db, "revisions in use", `SELECT revision FROM assignments WHERE revision != ''`, nil,
		func(r rowScanner) (string, error) {
			var s string
			return s, r.Scan(&s)
		})
	if err != nil {
		return nil, err
	}
	for _, s := range pinned {
		out[s] = true
	}
	// What hosts report running or wanting: their reports (hosts.state, a
	// JSON []api.HostProgram) are decoded here, not in SQL.
	type hostState struct{ name, state string }
	hosts, err := queryList(ctx, d.db, "list hosts", `SELECT name, state FROM hosts ORDER BY name`, nil,
		func(r rowScanner) (hostState, error) {
			var h hostState
			return h, r.Scan(&h.name, &h.state)
		})
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		var report []api.HostProgram
		if err := json.Unmarshal([]byte(h.state), &report); err != nil {
			return nil, fmt.Errorf("revisions in use: host %s state: %w", h.name, err)
		}
		for _, p := range report {
			if p.Revision != "" {
				out[p.Revision] = true
			}
			if p.Desired != "" {
				out[p.Desired] = true
			}
		}
	}
	view := d.DesiredView()
	for _, h := range hosts {
		ds, err := view.DesiredState(ctx, h.name)
		if err != nil {
			return nil, err
		}
		for _, p := range ds.Programs {
			if p.Revision != "" {
				out[p.Revision] = true
			}
		}
	}
	return out, nil
}
