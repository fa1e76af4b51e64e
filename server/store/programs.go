package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// Programs lists every program, by name, each with its latest revision
// and that revision's builds.
func (d *DB) Programs(ctx context.Context) ([]api.Program, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT p.name, p.created_at, p.updated_at,
			r.digest, r.entry, r.size, r.files, r.pushed_by, r.created_at
		FROM programs p LEFT JOIN revisions r ON r.id = (
			SELECT id FROM revisions WHERE program_id = p.id ORDER BY created_at DESC, id DESC LIMIT 1)
		ORDER BY p.name`)
	if err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	var out []api.Program
	for rows.Next() {
		var (
			p                 api.Program
			digest, entry, by sql.NullString
			size, files       sql.NullInt64
			rcreated          sql.NullTime
		)
		if err := rows.Scan(&p.Name, &p.CreatedAt, &p.UpdatedAt, &digest, &entry, &size, &files, &by, &rcreated); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list programs: %w", err)
		}
		if digest.Valid {
			p.Latest = &api.Revision{Digest: digest.String, Entry: entry.String, Size: size.Int64,
				Files: int(files.Int64), PushedBy: by.String, CreatedAt: rcreated.Time.UTC()}
		}
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	for i := range out {
		if out[i].Latest == nil {
			continue
		}
		if out[i].Latest.Builds, err = d.Builds(ctx, BuildFilter{Program: out[i].Name, Revision: out[i].Latest.Digest}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Program returns one program with all its revisions, newest first, each
// with its builds.
func (d *DB) Program(ctx context.Context, name string) (api.Program, error) {
	var p api.Program
	err := d.db.QueryRowContext(ctx, `SELECT name, created_at, updated_at FROM programs WHERE name = ?`, name).
		Scan(&p.Name, &p.CreatedAt, &p.UpdatedAt)
	if err != nil {
		return p, fmt.Errorf("program %q: %w", name, notFound(err))
	}
	p.Revisions, err = d.Revisions(ctx, name)
	if err != nil {
		return p, err
	}
	builds, err := d.Builds(ctx, BuildFilter{Program: name})
	if err != nil {
		return p, err
	}
	byRev := map[string][]api.Build{}
	for _, b := range builds {
		byRev[b.Revision] = append(byRev[b.Revision], b)
	}
	for i := range p.Revisions {
		p.Revisions[i].Builds = byRev[p.Revisions[i].Digest]
	}
	if len(p.Revisions) > 0 {
		p.Latest = &p.Revisions[0]
	}
	return p, nil
}

// Revisions lists a program's revisions, newest first.
func (d *DB) Revisions(ctx context.Context, program string) ([]api.Revision, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT r.digest, r.entry, r.size, r.files, r.pushed_by, r.created_at
		FROM revisions r JOIN programs p ON p.id = r.program_id WHERE p.name = ?
		ORDER BY r.created_at DESC, r.id DESC`, program)
	if err != nil {
		return nil, fmt.Errorf("revisions of %q: %w", program, err)
	}
	defer rows.Close()
	var out []api.Revision
	for rows.Next() {
		var r api.Revision
		if err := rows.Scan(&r.Digest, &r.Entry, &r.Size, &r.Files, &r.PushedBy, &r.CreatedAt); err != nil {
			return nil, fmt.Errorf("revisions of %q: %w", program, err)
		}
		r.CreatedAt = r.CreatedAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// RevisionBlob resolves a revision of a program, given by its full digest
// or a unique prefix (at least 4 characters, in any case: digests are
// lowercase hex, and PostgreSQL's LIKE, unlike SQLite's, is
// case-sensitive), to its digest and the blob holding its canonical
// bundle.
func (d *DB) RevisionBlob(ctx context.Context, program, revision string) (digest, blob, entry string, err error) {
	if len(revision) < 4 {
		return "", "", "", fmt.Errorf("revision %q: give at least 4 hex characters: %w", revision, ErrInvalid)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT r.digest, r.bundle_blob, r.entry FROM revisions r JOIN programs p ON p.id = r.program_id
		WHERE p.name = ? AND r.digest LIKE ? ESCAPE '\' LIMIT 2`, program, likePrefix(strings.ToLower(revision)))
	if err != nil {
		return "", "", "", fmt.Errorf("revision %s of %q: %w", revision, program, err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
		if err := rows.Scan(&digest, &blob, &entry); err != nil {
			return "", "", "", err
		}
	}
	switch n {
	case 0:
		return "", "", "", fmt.Errorf("revision %s of %q: %w", revision, program, ErrNotFound)
	case 2:
		return "", "", "", fmt.Errorf("revision %s of %q: ambiguous prefix: %w", revision, program, ErrInvalid)
	}
	return digest, blob, entry, rows.Err()
}

// TokenRow is a stored token; Hash is the hex sha256 of its secret.
type TokenRow struct {
	api.Token
	Hash string
}

// CreateToken stores a token. It fails with ErrConflict when the name is
// taken.
func (d *DB) CreateToken(ctx context.Context, name, role, hash string) (api.Token, error) {
	t := now()
	var id int64
	err := d.db.QueryRowContext(ctx, `INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO NOTHING RETURNING id`, name, role, hash, t).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return api.Token{}, fmt.Errorf("token %q: %w", name, ErrConflict)
	}
	if err != nil {
		return api.Token{}, fmt.Errorf("create token %q: %w", name, err)
	}
	return api.Token{ID: id, Name: name, Role: role, CreatedAt: t}, nil
}

// TokenByHash finds a live (not revoked) token by the hash of its secret
// and records its use.
func (d *DB) TokenByHash(ctx context.Context, hash string) (api.Token, error) {
	var (
		t    api.Token
		last sql.NullTime
	)
	err := d.db.QueryRowContext(ctx, `SELECT id, name, role, host, created_at, last_used_at FROM tokens
		WHERE hash = ? AND revoked_at IS NULL`, hash).Scan(&t.ID, &t.Name, &t.Role, &t.Host, &t.CreatedAt, &last)
	if err != nil {
		return t, fmt.Errorf("token: %w", notFound(err))
	}
	t.LastUsedAt = nullTime(last)
	// Record use at most once a minute, to keep reads cheap.
	if t.LastUsedAt == nil || time.Since(*t.LastUsedAt) > time.Minute {
		_, _ = d.db.ExecContext(ctx, `UPDATE tokens SET last_used_at = ? WHERE id = ?`, now(), t.ID)
	}
	return t, nil
}

// Tokens lists tokens, revoked ones included.
func (d *DB) Tokens(ctx context.Context) ([]api.Token, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT id, name, role, host, created_at, last_used_at, revoked_at FROM tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []api.Token
	for rows.Next() {
		var (
			t             api.Token
			last, revoked sql.NullTime
		)
		if err := rows.Scan(&t.ID, &t.Name, &t.Role, &t.Host, &t.CreatedAt, &last, &revoked); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		t.LastUsedAt, t.RevokedAt = nullTime(last), nullTime(revoked)
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken revokes a token by name.
func (d *DB) RevokeToken(ctx context.Context, name string) error {
	res, err := d.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL`, now(), name)
	if err != nil {
		return fmt.Errorf("revoke token %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("token %q: %w", name, ErrNotFound)
	}
	return nil
}

// HasTokens reports whether any token exists (false on first start).
func (d *DB) HasTokens(ctx context.Context) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens`).Scan(&n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	return n > 0, nil
}
