package store

import (
	"context"
	"fmt"
	"time"
)

// AcquireLease takes the lease name for holder until ttl from now: it
// succeeds when nobody holds it, when its holder let it expire, or when
// holder already holds it (a renewal). One conditional upsert decides, so
// among processes racing for it exactly one wins.
func (d *DB) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	t := now()
	res, err := d.db.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at < ?`, name, holder, t.Add(ttl), t)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease gives up holder's lease name, if it still holds it.
func (d *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := d.db.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
