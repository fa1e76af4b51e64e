package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
)

// Names of the secrets a replica set shares.
const (
	// SecretSigningKey is the manifest signing key (server/signing).
	SecretSigningKey = "signing-key"
	// SecretAdminToken is the first admin token's secret.
	SecretAdminToken = "admin-token"
)

// InitSecret stores sealed under name unless a secret of that name exists,
// and returns the one stored: the caller's (created) or the one another
// replica stored first. Concurrent first starts race safely: exactly one
// insert wins and every caller reads back the winner. The store keeps
// sealed as it is given (encrypted by the caller, see server/secret).
func (d *DB) InitSecret(ctx context.Context, name string, sealed []byte) (stored []byte, created bool, err error) {
	err = d.tx(ctx, func(tx *sqlTx) error {
		created, err = insertSecret(ctx, tx, name, sealed)
		if err != nil {
			return err
		}
		stored, err = readSecret(ctx, tx, name)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("secret %s: %w", name, err)
	}
	return stored, created, nil
}

// InitAdmin creates the first admin token once for the whole replica set:
// in one transaction, unless the admin secret already exists, it stores
// sealed under SecretAdminToken and, when no token exists at all, the
// token row (name, admin role, hash). It returns the admin secret stored
// (created: by this call), or ErrNotFound when there is none because the
// database had tokens before the secret was kept in it (a data directory
// older than replica sets: its admin token file stays what it was).
func (d *DB) InitAdmin(ctx context.Context, sealed []byte, name, role, hash string) (stored []byte, created bool, err error) {
	err = d.tx(ctx, func(tx *sqlTx) error {
		created = false
		stored, err = readSecret(ctx, tx, SecretAdminToken)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return err
		}
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrNotFound
		}
		if created, err = insertSecret(ctx, tx, SecretAdminToken, sealed); err != nil {
			return err
		}
		if created {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?)`,
				name, role, hash, now()); err != nil {
				return err
			}
		}
		stored, err = readSecret(ctx, tx, SecretAdminToken)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("admin token: %w", err)
	}
	return stored, created, nil
}

func insertSecret(ctx context.Context, tx *sqlTx, name string, sealed []byte) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`, name, base64.StdEncoding.EncodeToString(sealed), now())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func readSecret(ctx context.Context, tx *sqlTx, name string) ([]byte, error) {
	var v string
	if err := tx.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return nil, notFound(err)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("stored value is not base64: %w", err)
	}
	return b, nil
}
