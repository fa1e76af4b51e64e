package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// Kernel is a kernel of the BTF archive.
type Kernel struct {
	ID           int64  `json:"-"`
	KID          string `json:"id"` // DISTRO/VERSION/ARCH/RELEASE
	Distro       string `json:"distro"`
	Version      string `json:"version"`
	Arch         string `json:"arch"`
	Release      string `json:"release"`
	Build        string `json:"build,omitempty"`
	VersionCode  uint32 `json:"version_code,omitempty"`
	BTFBlob      string `json:"btf_blob"`
	BTFSize      int64  `json:"btf_size"`
	ModulesBlob  string `json:"modules_blob,omitempty"`
	ModulesCount int    `json:"modules_count"`
	ModulesSize  int64  `json:"modules_size"`
	ConfigBlob   string `json:"config_blob,omitempty"`
	ImageBlob    string `json:"image_blob,omitempty"`
	ImageSize    int64  `json:"image_size,omitempty"`
	Source       string `json:"source"`
	ImportedBy   string `json:"imported_by,omitempty"`
	// Trust is api.KernelTrusted, or api.KernelUnverified for BTF that
	// host SourceHost uploaded.
	Trust      string    `json:"trust"`
	SourceHost string    `json:"source_host,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Unverified reports whether the kernel's BTF came from a host and no
// admin or trusted import vouched for it yet.
func (k Kernel) Unverified() bool { return k.Trust == api.KernelUnverified }

// ServedTo reports whether the artifacts relocated for k may be served to
// a caller: every caller for a trusted kernel, else only its source host
// (host is the host a host token is bound to; "" for other tokens) and
// admins.
func (k Kernel) ServedTo(host string, admin bool) bool {
	return !k.Unverified() || admin || host != "" && host == k.SourceHost
}

const kernelColumns = `id, kid, distro, version, arch, release, build, version_code, btf_blob, btf_size, modules_blob,
	modules_count, modules_size, config_blob, image_blob, image_size, source, imported_by, trust, source_host, created_at`

func scanKernel(row rowScanner) (Kernel, error) {
	var k Kernel
	err := row.Scan(&k.ID, &k.KID, &k.Distro, &k.Version, &k.Arch, &k.Release, &k.Build, &k.VersionCode, &k.BTFBlob,
		&k.BTFSize, &k.ModulesBlob, &k.ModulesCount, &k.ModulesSize, &k.ConfigBlob, &k.ImageBlob, &k.ImageSize,
		&k.Source, &k.ImportedBy, &k.Trust, &k.SourceHost, &k.CreatedAt)
	k.CreatedAt = k.CreatedAt.UTC()
	return k, notFound(err)
}

// PutKernel records a kernel. Importing the same BTF under the same id is a
// no-op (created is false); another BTF under an existing id is refused
// with ErrConflict unless replace is set. Blobs must already be stored.
//
// A kernel with Trust unverified (a host's upload) never replaces a
// trusted one; a trusted import of the same BTF makes every unverified
// kernel holding it trusted, and a trusted import of another BTF replaces
// an unverified kernel of its id.
//
// In the same transaction it queues the jobs the kernel implies: the
// relocation of the latest revision of every program for it, and the
// verification of its done artifacts when it has an image. queued counts
// the relocations.
func (d *DB) PutKernel(ctx context.Context, k Kernel, replace bool) (out Kernel, created bool, queued int, err error) {
	if k.Trust == "" {
		k.Trust = api.KernelTrusted
	}
	if k.Trust == api.KernelTrusted {
		k.SourceHost = ""
	}
	err = d.tx(ctx, func(tx *sqlTx) error {
		// The transaction may run again (PostgreSQL): everything it
		// reports is set from scratch; replace is putKernel's copy.
		var err error
		if created, err = d.putKernel(ctx, tx, &k, replace); err != nil {
			return err
		}
		if queued, err = queueArtifactsForKernel(ctx, tx, k.ID); err != nil {
			return err
		}
		_, err = queueVerifications(ctx, tx, `k.id = ?`, k.ID)
		return err
	})
	if err != nil {
		return k, false, 0, fmt.Errorf("store kernel %s: %w", k.KID, err)
	}
	out, err = d.KernelByID(ctx, k.ID)
	return out, created, queued, err
}

// putKernel writes the row of PutKernel, setting k.ID.
func (d *DB) putKernel(ctx context.Context, tx *sqlTx, k *Kernel, replace bool) (bool, error) {
	old, err := scanKernel(tx.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE kid = ?`, k.KID))
	if k.Trust == api.KernelTrusted {
		if _, err := tx.ExecContext(ctx, `UPDATE kernels SET trust = 'trusted', source_host = '' WHERE btf_blob = ?
			AND trust = 'unverified'`, k.BTFBlob); err != nil {
			return false, err
		}
		if err == nil && old.Unverified() && old.BTFBlob == k.BTFBlob {
			old.Trust, old.SourceHost = api.KernelTrusted, ""
		}
		if err == nil && old.Unverified() {
			replace = true // a trusted import replaces what a host uploaded
		}
	} else if err == nil && !old.Unverified() && old.BTFBlob != k.BTFBlob {
		replace = false // a host's upload never replaces a trusted kernel
	}
	switch {
	case err == nil && old.BTFBlob == k.BTFBlob && old.ModulesBlob == k.ModulesBlob:
		// Same kernel: fill in what the earlier import lacked.
		_, err = tx.ExecContext(ctx, `UPDATE kernels SET
			build = CASE WHEN build = '' THEN ? ELSE build END,
			version_code = CASE WHEN version_code = 0 THEN ? ELSE version_code END,
			config_blob = CASE WHEN config_blob = '' THEN ? ELSE config_blob END,
			image_blob = CASE WHEN image_blob = '' THEN ? ELSE image_blob END,
			image_size = CASE WHEN image_blob = '' THEN ? ELSE image_size END
			WHERE id = ?`, k.Build, k.VersionCode, k.ConfigBlob, k.ImageBlob, k.ImageSize, old.ID)
		k.ID = old.ID
		return false, err
	case err == nil && !replace:
		return false, fmt.Errorf("kernel %s already holds another BTF (%s): %w", k.KID, short(old.BTFBlob), ErrConflict)
	case err == nil:
		k.ID = old.ID
		_, err = tx.ExecContext(ctx, `DELETE FROM artifacts WHERE kernel_id = ?`, old.ID)
		if err == nil {
			_, err = tx.ExecContext(ctx, `UPDATE kernels SET build = ?, version_code = ?, btf_blob = ?, btf_size = ?,
				modules_blob = ?, modules_count = ?, modules_size = ?, config_blob = ?, image_blob = ?, image_size = ?,
				source = ?, imported_by = ?, trust = ?, source_host = ?, created_at = ? WHERE id = ?`,
				k.Build, k.VersionCode, k.BTFBlob, k.BTFSize, k.ModulesBlob, k.ModulesCount, k.ModulesSize,
				k.ConfigBlob, k.ImageBlob, k.ImageSize, k.Source, k.ImportedBy, k.Trust, k.SourceHost, now(), k.ID)
		}
		return true, err
	case !errors.Is(err, ErrNotFound):
		return false, err
	}
	return true, tx.QueryRowContext(ctx, `INSERT INTO kernels (kid, distro, version, arch, release, build, version_code,
		btf_blob, btf_size, modules_blob, modules_count, modules_size, config_blob, image_blob, image_size, source,
		imported_by, trust, source_host, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING id`,
		k.KID, k.Distro, k.Version, k.Arch, k.Release, k.Build, k.VersionCode, k.BTFBlob, k.BTFSize, k.ModulesBlob,
		k.ModulesCount, k.ModulesSize, k.ConfigBlob, k.ImageBlob, k.ImageSize, k.Source, k.ImportedBy, k.Trust,
		k.SourceHost, now()).Scan(&k.ID)
}

// KernelByID returns a kernel by row id.
func (d *DB) KernelByID(ctx context.Context, id int64) (Kernel, error) {
	k, err := scanKernel(d.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE id = ?`, id))
	if err != nil {
		return k, fmt.Errorf("kernel #%d: %w", id, err)
	}
	return k, nil
}

// Kernel returns a kernel by its id DISTRO/VERSION/ARCH/RELEASE.
func (d *DB) Kernel(ctx context.Context, kid string) (Kernel, error) {
	k, err := scanKernel(d.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE kid = ?`, kid))
	if err != nil {
		return k, fmt.Errorf("kernel %s: %w", kid, err)
	}
	return k, nil
}

// Kernels lists kernels, of one arch when arch is not empty, by id.
func (d *DB) Kernels(ctx context.Context, arch string) ([]Kernel, error) {
	q := `SELECT ` + kernelColumns + ` FROM kernels`
	var args []any
	if arch != "" {
		q += ` WHERE arch = ?`
		args = append(args, arch)
	}
	return queryList(ctx, d.db, "list kernels", q+` ORDER BY kid`, args, scanKernel)
}

// DeleteKernel removes a kernel and its artifacts.
func (d *DB) DeleteKernel(ctx context.Context, kid string) error {
	res, err := d.db.ExecContext(ctx, `DELETE FROM kernels WHERE kid = ?`, kid)
	if err != nil {
		return fmt.Errorf("delete kernel %s: %w", kid, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("kernel %s: %w", kid, ErrNotFound)
	}
	return nil
}

// ApproveKernel marks an unverified kernel trusted (bpfarm kernels
// approve): its artifacts are then served to every host. Approving a
// trusted kernel changes nothing (changed is false).
func (d *DB) ApproveKernel(ctx context.Context, kid string) (k Kernel, changed bool, err error) {
	res, err := d.db.ExecContext(ctx, `UPDATE kernels SET trust = 'trusted' WHERE kid = ? AND trust = 'unverified'`, kid)
	if err != nil {
		return k, false, fmt.Errorf("approve kernel %s: %w", kid, err)
	}
	n, _ := res.RowsAffected()
	k, err = d.Kernel(ctx, kid)
	return k, n > 0, err
}

// UnverifiedKernels returns the unverified kernels by id.
func (d *DB) UnverifiedKernels(ctx context.Context) (map[string]Kernel, error) {
	ks, err := queryList(ctx, d.db, "list unverified kernels", `SELECT `+kernelColumns+` FROM kernels
		WHERE trust = 'unverified'`, nil, scanKernel)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Kernel, len(ks))
	for _, k := range ks {
		out[k.KID] = k
	}
	return out, nil
}

// UnverifiedBlobKernel returns the unverified kernel a blob belongs to —
// its BTF, or a file of an artifact relocated for it — when no trusted
// kernel's row names the same blob; found is false otherwise.
func (d *DB) UnverifiedBlobKernel(ctx context.Context, digest string) (k Kernel, found bool, err error) {
	var trusted int
	err = d.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM kernels WHERE trust = 'trusted' AND ? IN (btf_blob, modules_blob, config_blob, image_blob)) +
		(SELECT COUNT(*) FROM artifacts a JOIN kernels k ON k.id = a.kernel_id WHERE k.trust = 'trusted'
			AND ? IN (a.minbtf_blob, a.relocated_blob, a.manifest_blob))`, digest, digest).Scan(&trusted)
	if err != nil || trusted > 0 {
		return k, false, err
	}
	k, err = scanKernel(d.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE trust = 'unverified' AND (
			? IN (btf_blob, modules_blob, config_blob, image_blob)
			OR id IN (SELECT kernel_id FROM artifacts WHERE ? IN (minbtf_blob, relocated_blob, manifest_blob)))
		LIMIT 1`, digest, digest))
	if errors.Is(err, ErrNotFound) {
		return k, false, nil
	}
	return k, err == nil, err
}
