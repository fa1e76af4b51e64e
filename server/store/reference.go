package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// PinReference makes kernel kid its arch's reference kernel for CO-RE
// compiles, replacing any earlier pin of that arch; by names the admin.
func (d *DB) PinReference(ctx context.Context, kid, by string) (Kernel, error) {
	k, err := d.Kernel(ctx, kid)
	if err != nil {
		return k, err
	}
	_, err = d.db.ExecContext(ctx, `INSERT INTO reference_kernels (arch, kernel_id, pinned_by, pinned_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (arch) DO UPDATE SET kernel_id = excluded.kernel_id, pinned_by = excluded.pinned_by, pinned_at = excluded.pinned_at`,
		k.Arch, k.ID, by, time.Now().UTC())
	if err != nil {
		return k, fmt.Errorf("pin reference kernel %s: %w", kid, err)
	}
	return k, nil
}

// UnpinReference removes the pin of arch's reference kernel: the arch's
// newest kernel is its reference again. Without a pin it returns
// ErrNotFound.
func (d *DB) UnpinReference(ctx context.Context, arch string) error {
	res, err := d.db.ExecContext(ctx, `DELETE FROM reference_kernels WHERE arch = ?`, arch)
	if err != nil {
		return fmt.Errorf("unpin reference kernel of %s: %w", arch, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("no pinned reference kernel for %s: %w", arch, ErrNotFound)
	}
	return nil
}

// PinnedReference returns the kernel pinned as arch's reference, or
// ErrNotFound.
func (d *DB) PinnedReference(ctx context.Context, arch string) (Kernel, error) {
	k, err := scanKernel(d.db.QueryRowContext(ctx, `SELECT `+kernelColumns+`
		FROM kernels WHERE id = (SELECT kernel_id FROM reference_kernels WHERE arch = ?)`, arch))
	if errors.Is(err, ErrNotFound) {
		return k, fmt.Errorf("no pinned reference kernel for %s: %w", arch, ErrNotFound)
	}
	if err != nil {
		return k, fmt.Errorf("pinned reference kernel of %s: %w", arch, err)
	}
	return k, nil
}
