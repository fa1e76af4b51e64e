package store

import (
	"context"
	"fmt"
	"time"
)

// Session is a web UI session, opened by signing in with an API token.
// ID is the hex SHA-256 of the opaque value the browser holds; the value
// itself is never stored.
type Session struct {
	ID        string
	TokenID   int64
	TokenName string // filled by Session
	Role      string
	CSRF      string // the session's synchronizer token for forms
	CreatedAt time.Time
	ExpiresAt time.Time
	UserAgent string
}

// CreateSession stores a session. The token must exist.
func (d *DB) CreateSession(ctx context.Context, s Session) error {
	if s.CreatedAt.IsZero() {
		s.CreatedAt = now()
	}
	_, err := d.db.ExecContext(ctx, `INSERT INTO sessions (id, token_id, role, csrf, created_at, expires_at, user_agent)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, s.ID, s.TokenID, s.Role, s.CSRF, s.CreatedAt.UTC(), s.ExpiresAt.UTC(), s.UserAgent)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// Session returns a live session by id (the hash of the cookie value): not
// expired, and its token not revoked. It returns ErrNotFound otherwise.
func (d *DB) Session(ctx context.Context, id string) (Session, error) {
	var s Session
	err := d.db.QueryRowContext(ctx, `SELECT s.id, s.token_id, t.name, s.role, s.csrf, s.created_at, s.expires_at, s.user_agent
		FROM sessions s JOIN tokens t ON t.id = s.token_id
		WHERE s.id = ? AND s.expires_at > ? AND t.revoked_at IS NULL`, id, now()).
		Scan(&s.ID, &s.TokenID, &s.TokenName, &s.Role, &s.CSRF, &s.CreatedAt, &s.ExpiresAt, &s.UserAgent)
	if err != nil {
		return s, fmt.Errorf("session: %w", notFound(err))
	}
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	return s, nil
}

// ExtendSession moves a session's expiry to until (sliding expiry).
func (d *DB) ExtendSession(ctx context.Context, id string, until time.Time) error {
	if _, err := d.db.ExecContext(ctx, `UPDATE sessions SET expires_at = ? WHERE id = ?`, until.UTC(), id); err != nil {
		return fmt.Errorf("extend session: %w", err)
	}
	return nil
}

// DeleteSession ends a session (sign-out). Ending a session that does not
// exist is not an error.
func (d *DB) DeleteSession(ctx context.Context, id string) error {
	if _, err := d.db.ExecContext(ctx, `DELETE FROM sessions WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes expired sessions and those of revoked
// tokens; it returns how many it removed.
func (d *DB) DeleteExpiredSessions(ctx context.Context) (int64, error) {
	res, err := d.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?
		OR token_id IN (SELECT id FROM tokens WHERE revoked_at IS NOT NULL)`, now())
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return res.RowsAffected()
}
