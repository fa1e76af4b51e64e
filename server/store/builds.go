package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
)

// RevisionInput records a pushed source bundle.
type RevisionInput struct {
	Program    string
	Digest     string // canonical bundle digest
	Entry      string
	BundleBlob string // blob digest of the canonical tar.gz (already stored)
	Size       int64
	Files      int
	PushedBy   string
}

// AddRevision records a revision of a program, creating the program on
// first push. It reports whether the revision is new.
func (d *DB) AddRevision(ctx context.Context, in RevisionInput) (created bool, err error) {
	err = d.tx(ctx, func(tx *sqlTx) error {
		t := now()
		var pid int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM programs WHERE name = ?`, in.Program).Scan(&pid)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.QueryRowContext(ctx, `INSERT INTO programs (name, created_at, updated_at) VALUES (?, ?, ?) RETURNING id`,
				in.Program, t, t).Scan(&pid)
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO revisions (program_id, digest, entry, bundle_blob, size, files, pushed_by, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (program_id, digest) DO NOTHING`,
			pid, in.Digest, in.Entry, in.BundleBlob, in.Size, in.Files, in.PushedBy, t)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		created = n == 1
		if created {
			_, err = tx.ExecContext(ctx, `UPDATE programs SET updated_at = ? WHERE id = ?`, t, pid)
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("add revision %s of %s: %w", in.Digest, in.Program, err)
	}
	return created, nil
}

// BuildInput names the build of a revision for one arch and flag set.
type BuildInput struct {
	Program  string
	Revision string
	Arch     string
	Flags    []string
	CacheKey string
	// KernelID is the kernel of a per-kernel build (0 for a CO-RE build).
	KernelID int64
	// HeaderSet names the libbpf header set ("" is the built-in one).
	HeaderSet string
}

// EnsureBuild returns the build of in, creating it when needed:
//   - an existing build of the same revision, arch and flags is returned as
//     is, unless its inputs changed (another cache key, e.g. a new compiler)
//     or it failed for an infrastructure reason: then it is queued again;
//   - else, when another build has the same cache key and a final result
//     (success, or a failure caused by the source), the new build copies that
//     result without compiling (a cache hit) and, in the same transaction,
//     a copied success queues its relocations for every kernel of its arch;
//   - else a new build is queued.
//
// It reports whether a compile was queued.
func (d *DB) EnsureBuild(ctx context.Context, in BuildInput) (b api.Build, queued bool, err error) {
	flags, _ := json.Marshal(nonNil(in.Flags))
	var id int64
	err = d.tx(ctx, func(tx *sqlTx) error {
		queued = false
		var rid int64
		err := tx.QueryRowContext(ctx, `SELECT r.id FROM revisions r JOIN programs p ON p.id = r.program_id
			WHERE p.name = ? AND r.digest = ?`, in.Program, in.Revision).Scan(&rid)
		if err != nil {
			return fmt.Errorf("revision: %w", notFound(err))
		}
		var state, key, kind string
		err = tx.QueryRowContext(ctx, `SELECT id, state, cache_key, error_kind FROM builds
			WHERE revision_id = ? AND arch = ? AND flags = ? AND COALESCE(kernel_id, 0) = ?`,
			rid, in.Arch, string(flags), in.KernelID).Scan(&id, &state, &key, &kind)
		switch {
		case err == nil:
			if key == in.CacheKey && !(state == api.StateFailed && kind == ErrorKindInfra) {
				return nil
			}
			queued = true
			_, err = tx.ExecContext(ctx, `UPDATE builds SET cache_key = ?, state = 'queued', error = '', error_kind = '',
				diagnostics = '[]', inspection = '', object_blob = '', object_size = 0, log_blob = '', compiler = '',
				used_pch = 0, attempts = 0, cached_from = NULL, started_at = NULL, finished_at = NULL, created_at = ?,
				header_set = ?, lease_owner = '', lease_expires = NULL, not_before = NULL WHERE id = ?`,
				in.CacheKey, now(), in.HeaderSet, id)
			if err == nil {
				// Its artifacts are of the old object.
				_, err = tx.ExecContext(ctx, `DELETE FROM artifacts WHERE build_id = ?`, id)
			}
			return err
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		t := now()
		// A finished build with the same inputs is a cache hit.
		err = tx.QueryRowContext(ctx, `INSERT INTO builds (revision_id, arch, flags, cache_key, state, error, error_kind,
				diagnostics, inspection, object_blob, object_size, log_blob, compiler, used_pch, cached_from,
				created_at, started_at, finished_at, kernel_id, header_set)
			SELECT ?, ?, ?, cache_key, state, error, error_kind, diagnostics, inspection, object_blob, object_size,
				log_blob, compiler, used_pch, id, ?, ?, ?, NULLIF(?, 0), ?
			FROM builds WHERE cache_key = ? AND (state = 'succeeded' OR (state = 'failed' AND error_kind = 'user'))
			ORDER BY id DESC LIMIT 1 RETURNING id`,
			rid, in.Arch, string(flags), t, t, t, in.KernelID, in.HeaderSet, in.CacheKey).Scan(&id)
		if err == nil {
			_, err = queueArtifacts(ctx, tx, id)
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO builds (revision_id, arch, flags, cache_key, state, created_at, kernel_id, header_set)
			VALUES (?, ?, ?, ?, 'queued', ?, NULLIF(?, 0), ?) RETURNING id`,
			rid, in.Arch, string(flags), in.CacheKey, t, in.KernelID, in.HeaderSet).Scan(&id)
		queued = err == nil
		return err
	})
	if err != nil {
		return b, false, fmt.Errorf("ensure build of %s@%s for %s: %w", in.Program, short(in.Revision), in.Arch, err)
	}
	b, err = d.Build(ctx, id)
	return b, queued, err
}

// Failure kinds of builds (api.Build.ErrorKind).
const (
	// ErrorKindUser: the source is wrong; the failure is final and cached.
	ErrorKindUser = "user"
	// ErrorKindInfra: the farm failed (storage, disk, timeout, internal);
	// such builds are retried and never served as cache hits.
	ErrorKindInfra = "infra"
)

// Job is a claimed build: everything a worker needs to run it.
type Job struct {
	Lease
	Program    string
	Revision   string
	Entry      string
	BundleBlob string
	Arch       string
	Flags      []string
	CacheKey   string
	Attempts   int
	KernelID   int64  // per-kernel build: compile against this kernel's headers
	HeaderSet  string // libbpf header set; "" is the built-in one
	PushedBy   string // the token that pushed the revision (its quota pays)
	// Expired is set when the job was claimed from a worker whose lease
	// ran out.
	Expired bool
}

// Claim leases the oldest claimable build (queued, or running with a
// lease that ran out) to o.Owner, marks it running and returns it. It
// returns ErrNotFound when there is none.
func (d *DB) Claim(ctx context.Context, o ClaimOptions) (*Job, error) {
	j := Job{Lease: Lease{Queue: QueueBuilds, Owner: o.Owner}}
	var flags string
	err := d.tx(ctx, func(tx *sqlTx) error {
		var err error
		j.ID, j.Attempts, j.Expired, err = d.claimJob(ctx, tx, QueueBuilds, o, `builds j`, `j.id`)
		if err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT b.arch, b.flags, b.cache_key, COALESCE(b.kernel_id, 0), b.header_set,
			p.name, r.digest, r.entry, r.bundle_blob, r.pushed_by FROM builds b
			JOIN revisions r ON r.id = b.revision_id JOIN programs p ON p.id = r.program_id WHERE b.id = ?`, j.ID).
			Scan(&j.Arch, &flags, &j.CacheKey, &j.KernelID, &j.HeaderSet, &j.Program, &j.Revision, &j.Entry,
				&j.BundleBlob, &j.PushedBy)
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("claim build: %w", err)
	}
	if err := json.Unmarshal([]byte(flags), &j.Flags); err != nil {
		return nil, fmt.Errorf("claim build %d: flags: %w", j.ID, err)
	}
	return &j, nil
}

// Outcome is the result of running a build.
type Outcome struct {
	State       string // api.StateSucceeded or api.StateFailed
	Error       string
	ErrorKind   string // ErrorKindUser or ErrorKindInfra for failures
	Diagnostics []bpfsrc.Diagnostic
	Inspection  *inspect.Object
	ObjectBlob  string
	ObjectSize  int64
	LogBlob     string
	Compiler    string
	UsedPCH     bool
}

// Finish records the outcome of the build leased by l and, in the same
// transaction, queues the relocations a success implies (one per kernel
// of its arch; a per-kernel build's own kernel only). It returns how many
// relocations it queued, and ErrLeaseLost when l is no longer held. Blobs
// it names must already be stored.
func (d *DB) Finish(ctx context.Context, l Lease, o Outcome) (queued int, err error) {
	diags, _ := json.Marshal(nonNil(o.Diagnostics))
	var insp []byte
	if o.Inspection != nil {
		insp, _ = json.Marshal(o.Inspection)
	}
	err = d.tx(ctx, func(tx *sqlTx) error {
		queued = 0 // the transaction may run again (PostgreSQL)
		res, err := tx.ExecContext(ctx, `UPDATE builds SET state = ?, error = ?, error_kind = ?, diagnostics = ?, inspection = ?,
			object_blob = ?, object_size = ?, log_blob = ?, compiler = ?, used_pch = ?, finished_at = ?,
			lease_owner = '', lease_expires = NULL`+finishCond,
			o.State, o.Error, o.ErrorKind, string(diags), string(insp), o.ObjectBlob, o.ObjectSize, o.LogBlob, o.Compiler,
			o.UsedPCH, now(), l.ID, l.Owner)
		if err != nil {
			return err
		}
		if err := leaseHeld(res, l); err != nil {
			return err
		}
		if o.State != api.StateSucceeded {
			return nil
		}
		queued, err = queueArtifacts(ctx, tx, l.ID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("finish build %d: %w", l.ID, err)
	}
	return queued, nil
}

// QueueDepth counts queued and running builds.
func (d *DB) QueueDepth(ctx context.Context) (queued, running int, err error) {
	err = d.db.QueryRowContext(ctx, `SELECT
		COUNT(CASE WHEN state = 'queued' THEN 1 END), COUNT(CASE WHEN state = 'running' THEN 1 END)
		FROM builds WHERE state IN ('queued', 'running')`).
		Scan(&queued, &running)
	return queued, running, err
}

const buildColumns = `b.id, p.name, r.digest, b.arch, b.flags, b.state, b.error, b.error_kind, b.diagnostics, b.inspection,
	b.object_blob, b.object_size, b.log_blob, b.compiler, b.used_pch, b.attempts, b.cached_from, b.created_at, b.started_at, b.finished_at,
	COALESCE((SELECT kid FROM kernels WHERE id = b.kernel_id), ''), b.header_set`

const buildFrom = ` FROM builds b JOIN revisions r ON r.id = b.revision_id JOIN programs p ON p.id = r.program_id`

func scanBuild(row rowScanner) (api.Build, error) {
	var (
		b                  api.Build
		flags, diags, insp string
		objBlob, logBlob   string
		objSize            int64
		cachedFrom         sql.NullInt64
		started, finished  sql.NullTime
		createdAt          time.Time
	)
	err := row.Scan(&b.ID, &b.Program, &b.Revision, &b.Arch, &flags, &b.State, &b.Error, &b.ErrorKind, &diags, &insp,
		&objBlob, &objSize, &logBlob, &b.Compiler, &b.UsedPCH, &b.Attempts, &cachedFrom, &createdAt, &started, &finished,
		&b.Kernel, &b.HeaderSet)
	if err != nil {
		return b, notFound(err)
	}
	b.CreatedAt = createdAt.UTC()
	b.StartedAt, b.FinishedAt = nullTime(started), nullTime(finished)
	if b.StartedAt != nil && b.FinishedAt != nil {
		b.DurationMS = b.FinishedAt.Sub(*b.StartedAt).Milliseconds()
	}
	b.CachedFrom = cachedFrom.Int64
	if err := json.Unmarshal([]byte(flags), &b.Flags); err != nil {
		return b, fmt.Errorf("build %d flags: %w", b.ID, err)
	}
	if err := json.Unmarshal([]byte(diags), &b.Diagnostics); err != nil {
		return b, fmt.Errorf("build %d diagnostics: %w", b.ID, err)
	}
	if insp != "" {
		b.Inspection = new(inspect.Object)
		if err := json.Unmarshal([]byte(insp), b.Inspection); err != nil {
			return b, fmt.Errorf("build %d inspection: %w", b.ID, err)
		}
	}
	if objBlob != "" {
		b.Object = &api.Blob{Digest: objBlob, Size: objSize}
	}
	if logBlob != "" {
		b.Log = &api.Blob{Digest: logBlob}
	}
	return b, nil
}

// Build returns one build.
func (d *DB) Build(ctx context.Context, id int64) (api.Build, error) {
	b, err := scanBuild(d.db.QueryRowContext(ctx, `SELECT `+buildColumns+buildFrom+` WHERE b.id = ?`, id))
	if err != nil {
		return b, fmt.Errorf("build %d: %w", id, err)
	}
	return b, nil
}

// BuildFilter selects builds; zero fields match everything.
type BuildFilter struct {
	Program  string
	Revision string
	State    string
	Limit    int
}

// Builds lists builds, newest first.
func (d *DB) Builds(ctx context.Context, f BuildFilter) ([]api.Build, error) {
	q := `SELECT ` + buildColumns + buildFrom + ` WHERE 1=1`
	var args []any
	if f.Program != "" {
		q += ` AND p.name = ?`
		args = append(args, f.Program)
	}
	if f.Revision != "" {
		q += ` AND r.digest = ?`
		args = append(args, f.Revision)
	}
	if f.State != "" {
		q += ` AND b.state = ?`
		args = append(args, f.State)
	}
	q += ` ORDER BY b.id DESC`
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 1000
	}
	q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	return queryList(ctx, d.db, "list builds", q, args, scanBuild)
}

// BlobRefs returns every blob digest the database names, for consistency
// checks.
func (d *DB) BlobRefs(ctx context.Context) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT bundle_blob FROM revisions
		UNION SELECT object_blob FROM builds WHERE object_blob != ''
		UNION SELECT log_blob FROM builds WHERE log_blob != ''
		UNION SELECT btf_blob FROM kernels
		UNION SELECT modules_blob FROM kernels WHERE modules_blob != ''
		UNION SELECT config_blob FROM kernels WHERE config_blob != ''
		UNION SELECT image_blob FROM kernels WHERE image_blob != ''
		UNION SELECT minbtf_blob FROM artifacts WHERE minbtf_blob != ''
		UNION SELECT relocated_blob FROM artifacts WHERE relocated_blob != ''
		UNION SELECT manifest_blob FROM artifacts WHERE manifest_blob != ''`)
	if err != nil {
		return nil, fmt.Errorf("blob refs: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// likePrefix escapes s for a LIKE prefix match.
func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}
