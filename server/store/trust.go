package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// EnrollHost creates the host token of host name (role host, bound to the
// name, with the labels the host is to carry) and revokes the host's
// previous token, in one transaction. It returns the new token and the
// names of the tokens it revoked.
func (d *DB) EnrollHost(ctx context.Context, host string, labels map[string]string, tokenName, hash string) (api.Token, []string, error) {
	lb, err := json.Marshal(nonNilMap(labels))
	if err != nil {
		return api.Token{}, nil, fmt.Errorf("enroll host %s: %w", host, err)
	}
	var (
		tok     = api.Token{Name: tokenName, Role: api.RoleHost, Host: host, CreatedAt: now()}
		revoked []string
	)
	err = d.tx(ctx, func(tx *sqlTx) error {
		revoked = nil
		rows, err := tx.QueryContext(ctx, `UPDATE tokens SET revoked_at = ? WHERE host = ? AND revoked_at IS NULL
			RETURNING name`, tok.CreatedAt, host)
		if err != nil {
			return err
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			revoked = append(revoked, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO tokens (name, role, hash, host, host_labels, created_at)
			VALUES (?, 'host', ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING id`,
			tokenName, hash, host, string(lb), tok.CreatedAt).Scan(&tok.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %q: %w", tokenName, ErrConflict)
		}
		return err
	})
	if err != nil {
		return api.Token{}, nil, fmt.Errorf("enroll host %s: %w", host, err)
	}
	return tok, revoked, nil
}

// EnrolledLabels returns the labels a host token was enrolled with (empty
// when none were given).
func (d *DB) EnrolledLabels(ctx context.Context, tokenID int64) (map[string]string, error) {
	var lb string
	if err := d.db.QueryRowContext(ctx, `SELECT host_labels FROM tokens WHERE id = ?`, tokenID).Scan(&lb); err != nil {
		return nil, fmt.Errorf("enrolled labels: %w", notFound(err))
	}
	m := map[string]string{}
	if err := json.Unmarshal([]byte(lb), &m); err != nil {
		return nil, fmt.Errorf("enrolled labels: %w", err)
	}
	return m, nil
}

// QuotaOverrides returns the limits set for one token (zero: the default).
func (d *DB) QuotaOverrides(ctx context.Context, token string) (api.Quota, error) {
	var (
		q       api.Quota
		b, r, h sql.NullInt64
	)
	err := d.db.QueryRowContext(ctx, `SELECT max_bytes, max_revisions, max_builds_per_hour FROM tokens WHERE name = ?`,
		token).Scan(&b, &r, &h)
	if err != nil {
		return q, fmt.Errorf("token %q: %w", token, notFound(err))
	}
	q.MaxBytes, q.MaxRevisions, q.MaxBuildsPerHour = b.Int64, r.Int64, h.Int64
	return q, nil
}

// SetQuotaOverrides sets a token's limits; a zero field keeps the
// token's current override, a negative one clears it (back to the
// default).
func (d *DB) SetQuotaOverrides(ctx context.Context, token string, q api.Quota) error {
	set := "name = name" // a no-op, so that a token that does not exist is told apart
	var args []any
	for _, f := range []struct {
		col string
		v   int64
	}{{"max_bytes", q.MaxBytes}, {"max_revisions", q.MaxRevisions}, {"max_builds_per_hour", q.MaxBuildsPerHour}} {
		switch {
		case f.v < 0:
			set += ", " + f.col + " = NULL"
		case f.v > 0:
			set += ", " + f.col + " = ?"
			args = append(args, f.v)
		}
	}
	res, err := d.db.ExecContext(ctx, `UPDATE tokens SET `+set+` WHERE name = ?`, append(args, token)...)
	if err != nil {
		return fmt.Errorf("set quota of token %q: %w", token, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("token %q: %w", token, ErrNotFound)
	}
	return nil
}

// BytesStored is what a token's revisions store: the bundles, the build
// outputs (objects, logs) and the artifacts relocated from them. Each
// blob counts once per row naming it.
func (d *DB) BytesStored(ctx context.Context, token string) (int64, error) {
	var n int64
	err := d.db.QueryRowContext(ctx, `SELECT
		COALESCE((SELECT SUM(size) FROM revisions WHERE pushed_by = ?1), 0) +
		COALESCE((SELECT SUM(b.object_size) FROM builds b JOIN revisions r ON r.id = b.revision_id
			WHERE r.pushed_by = ?1 AND b.cached_from IS NULL), 0) +
		COALESCE((SELECT SUM(a.minbtf_size + a.relocated_size) FROM artifacts a JOIN builds b ON b.id = a.build_id
			JOIN revisions r ON r.id = b.revision_id WHERE r.pushed_by = ?1), 0)`, token).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("bytes stored by token %q: %w", token, err)
	}
	return n, nil
}

// BuildsSince counts the builds queued for a token's revisions since t
// (cache hits included: they are rows too, though they compile nothing).
func (d *DB) BuildsSince(ctx context.Context, token string, t time.Time) (int64, error) {
	var n int64
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds b JOIN revisions r ON r.id = b.revision_id
		WHERE r.pushed_by = ? AND b.created_at >= ? AND b.cached_from IS NULL`, token, t.UTC()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("builds of token %q: %w", token, err)
	}
	return n, nil
}
