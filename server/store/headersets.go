package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/bpfarm/bpfarm/api"
)

// HeaderFile is one header of a stored header set.
type HeaderFile struct {
	Name string
	Blob string // blob digest of the contents (already stored)
	Size int64
}

// PutHeaderSet records an imported header set. Sets are immutable: the same
// name with the same digest changes nothing (created is false); with
// another digest it is refused with ErrConflict.
func (d *DB) PutHeaderSet(ctx context.Context, hs api.HeaderSet, files []HeaderFile) (out api.HeaderSet, created bool, err error) {
	err = d.tx(ctx, func(tx *sqlTx) error {
		created = false
		old, err := scanHeaderSet(tx.QueryRowContext(ctx, `SELECT `+headerSetColumns+` FROM header_sets WHERE name = ?`, hs.Name))
		switch {
		case err == nil && old.Digest == hs.Digest:
			out = old
			return nil
		case err == nil:
			return fmt.Errorf("header set %s already holds other headers (digest %s); import under another name: %w",
				hs.Name, short(old.Digest), ErrConflict)
		case !errors.Is(err, ErrNotFound):
			return err
		}
		t := now()
		var id int64
		err = tx.QueryRowContext(ctx, `INSERT INTO header_sets (name, digest, version, files, size, imported_by, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`, hs.Name, hs.Digest, hs.Version, len(files), hs.Size, hs.ImportedBy, t).Scan(&id)
		if err != nil {
			return err
		}
		for _, f := range files {
			if _, err := tx.ExecContext(ctx, `INSERT INTO header_set_files (set_id, name, blob, size) VALUES (?, ?, ?, ?)`,
				id, f.Name, f.Blob, f.Size); err != nil {
				return err
			}
		}
		created = true
		out, err = scanHeaderSet(tx.QueryRowContext(ctx, `SELECT `+headerSetColumns+` FROM header_sets WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return out, false, fmt.Errorf("put header set %s: %w", hs.Name, err)
	}
	return out, created, nil
}

const headerSetColumns = `name, digest, version, files, size, imported_by, created_at`

func scanHeaderSet(row rowScanner) (api.HeaderSet, error) {
	var hs api.HeaderSet
	err := row.Scan(&hs.Name, &hs.Digest, &hs.Version, &hs.Files, &hs.Size, &hs.ImportedBy, &hs.CreatedAt)
	hs.CreatedAt = hs.CreatedAt.UTC()
	return hs, notFound(err)
}

// HeaderSets lists the imported header sets, newest first.
func (d *DB) HeaderSets(ctx context.Context) ([]api.HeaderSet, error) {
	return queryList(ctx, d.db, "list header sets", `SELECT `+headerSetColumns+` FROM header_sets ORDER BY created_at DESC, id DESC`,
		nil, scanHeaderSet)
}

// HeaderSet returns the imported set name and its files, sorted by name.
func (d *DB) HeaderSet(ctx context.Context, name string) (api.HeaderSet, []HeaderFile, error) {
	hs, err := scanHeaderSet(d.db.QueryRowContext(ctx, `SELECT `+headerSetColumns+` FROM header_sets WHERE name = ?`, name))
	if err != nil {
		return hs, nil, fmt.Errorf("header set %s: %w", name, err)
	}
	files, err := queryList(ctx, d.db, "list header set files", `SELECT f.name, f.blob, f.size FROM header_set_files f
		JOIN header_sets s ON s.id = f.set_id WHERE s.name = ? ORDER BY f.name`, []any{name},
		func(row rowScanner) (HeaderFile, error) {
			var f HeaderFile
			err := row.Scan(&f.Name, &f.Blob, &f.Size)
			return f, err
		})
	if err != nil {
		return hs, nil, err
	}
	return hs, files, nil
}
