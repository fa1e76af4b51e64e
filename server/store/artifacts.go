package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
)

// execer is a sqlDB or a sqlTx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// QueueArtifacts queues the relocation of a succeeded build for every
// kernel of its arch (a per-kernel build: its own kernel) that it has no
// artifact for. It returns how many were queued. Finish and EnsureBuild
// do this in their own transactions; this is for repairs.
func (d *DB) QueueArtifacts(ctx context.Context, buildID int64) (int, error) {
	n, err := queueArtifacts(ctx, d.db, buildID)
	if err != nil {
		return 0, fmt.Errorf("queue artifacts of build %d: %w", buildID, err)
	}
	return n, nil
}

func queueArtifacts(ctx context.Context, db execer, buildID int64) (int, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO artifacts (build_id, kernel_id, state, created_at)
		SELECT b.id, k.id, 'queued', ? FROM builds b JOIN kernels k ON k.arch = b.arch
		WHERE b.id = ? AND b.state = 'succeeded' AND (b.kernel_id IS NULL OR b.kernel_id = k.id)
		ON CONFLICT (build_id, kernel_id) DO NOTHING`, now(), buildID)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// queueArtifactsForKernel queues, for a newly imported kernel, the
// relocation of the latest revision of every program: its succeeded CO-RE
// builds of the kernel's arch.
func queueArtifactsForKernel(ctx context.Context, db execer, kernelID int64) (int, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO artifacts (build_id, kernel_id, state, created_at)
		SELECT b.id, k.id, 'queued', ? FROM kernels k
		JOIN builds b ON b.arch = k.arch AND b.state = 'succeeded' AND b.kernel_id IS NULL
		WHERE k.id = ? AND b.revision_id IN (
			SELECT (SELECT r.id FROM revisions r WHERE r.program_id = p.id ORDER BY r.created_at DESC, r.id DESC LIMIT 1)
			FROM programs p)
		ON CONFLICT (build_id, kernel_id) DO NOTHING`, now(), kernelID)
	if err != nil {
		return 0, fmt.Errorf("queue artifacts for kernel #%d: %w", kernelID, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// ArtifactJob is a claimed relocation: everything a worker needs.
type ArtifactJob struct {
	Lease
	Build     api.Build
	PerKernel bool
	Kernel    Kernel
	Attempts  int
	// Expired is set when the job was claimed from a worker whose lease
	// ran out.
	Expired bool
}

// ClaimArtifact leases the oldest claimable relocation (queued, or
// running with a lease that ran out) to o.Owner, preferring kernels whose
// BTF was parsed last (preferBTF), and marks it running. It returns
// ErrNotFound when there is none.
func (d *DB) ClaimArtifact(ctx context.Context, o ClaimOptions, preferBTF string) (*ArtifactJob, error) {
	j := ArtifactJob{Lease: Lease{Queue: QueueArtifacts, Owner: o.Owner}}
	var buildID, kernelID int64
	err := d.tx(ctx, func(tx *sqlTx) error {
		var err error
		j.ID, j.Attempts, j.Expired, err = d.claimJob(ctx, tx, QueueArtifacts, o,
			`artifacts j JOIN kernels k ON k.id = j.kernel_id`,
			`CASE WHEN k.btf_blob = ? THEN 0 ELSE 1 END, j.id`, preferBTF)
		if err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT build_id, kernel_id FROM artifacts WHERE id = ?`, j.ID).Scan(&buildID, &kernelID)
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("claim artifact: %w", err)
	}
	if j.Build, err = d.Build(ctx, buildID); err != nil {
		return nil, err
	}
	if j.Kernel, err = d.KernelByID(ctx, kernelID); err != nil {
		return nil, err
	}
	j.PerKernel = j.Build.Kernel != ""
	return &j, nil
}

// ArtifactOutcome is the result of a relocation.
type ArtifactOutcome struct {
	Error         string // a failure: state error
	Status        string // ok, poisoned, unsupported, failed
	Report        *manifest.Report
	MinBTFBlob    string
	MinBTFSize    int64
	RelocatedBlob string
	RelocatedSize int64
	ManifestBlob  string
}

// FinishArtifact records the outcome of the relocation leased by l and, in
// the same transaction, queues the verification a done artifact implies
// when its kernel has an image to boot. It returns ErrLeaseLost when l is
// no longer held.
func (d *DB) FinishArtifact(ctx context.Context, l Lease, o ArtifactOutcome) error {
	state := api.ArtifactDone
	if o.Error != "" {
		state = api.ArtifactError
	}
	var report []byte
	if o.Report != nil {
		report, _ = json.Marshal(o.Report)
	}
	err := d.tx(ctx, func(tx *sqlTx) error {
		res, err := tx.ExecContext(ctx, `UPDATE artifacts SET state = ?, status = ?, error = ?, report = ?, minbtf_blob = ?,
			minbtf_size = ?, relocated_blob = ?, relocated_size = ?, manifest_blob = ?, finished_at = ?,
			lease_owner = '', lease_expires = NULL`+finishCond, state, o.Status, o.Error, string(report), o.MinBTFBlob,
			o.MinBTFSize, o.RelocatedBlob, o.RelocatedSize, o.ManifestBlob, now(), l.ID, l.Owner)
		if err != nil {
			return err
		}
		if err := leaseHeld(res, l); err != nil {
			return err
		}
		if state != api.ArtifactDone {
			return nil
		}
		_, err = queueVerifications(ctx, tx, `a.id = ?`, l.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("finish artifact %d: %w", l.ID, err)
	}
	return nil
}

// ArtifactFilter selects artifacts; zero fields match everything.
type ArtifactFilter struct {
	ID       int64
	BuildID  int64
	Program  string
	Revision string
	Kernel   string // kernel id
	Limit    int
}

const artifactColumns = `a.id, p.name, r.digest, b.id, b.arch, k.kid, b.kernel_id IS NOT NULL, a.state, a.status, a.error,
	a.report, b.object_blob, b.object_size, a.minbtf_blob, a.minbtf_size, a.relocated_blob, a.relocated_size,
	a.manifest_blob, a.created_at, a.finished_at`

const artifactFrom = ` FROM artifacts a JOIN builds b ON b.id = a.build_id JOIN kernels k ON k.id = a.kernel_id
	JOIN revisions r ON r.id = b.revision_id JOIN programs p ON p.id = r.program_id`

func scanArtifact(row rowScanner) (api.Artifact, error) {
	var (
		a                            api.Artifact
		report, obj, minb, rel, mani string
		objSize, minSize, relSize    int64
		created                      time.Time
		finished                     sql.NullTime
	)
	err := row.Scan(&a.ID, &a.Program, &a.Revision, &a.BuildID, &a.Arch, &a.Kernel, &a.PerKernel, &a.State, &a.Status,
		&a.Error, &report, &obj, &objSize, &minb, &minSize, &rel, &relSize, &mani, &created, &finished)
	if err != nil {
		return a, notFound(err)
	}
	a.CreatedAt, a.FinishedAt = created.UTC(), nullTime(finished)
	if report != "" {
		a.Report = new(manifest.Report)
		if err := json.Unmarshal([]byte(report), a.Report); err != nil {
			return a, fmt.Errorf("artifact %d report: %w", a.ID, err)
		}
	}
	blobRef := func(d string, n int64) *api.Blob {
		if d == "" {
			return nil
		}
		return &api.Blob{Digest: d, Size: n}
	}
	a.Object, a.MinBTF, a.Relocated = blobRef(obj, objSize), blobRef(minb, minSize), blobRef(rel, relSize)
	a.Manifest = blobRef(mani, 0)
	return a, nil
}

// Artifacts lists artifacts, newest first.
func (d *DB) Artifacts(ctx context.Context, f ArtifactFilter) ([]api.Artifact, error) {
	q := `SELECT ` + artifactColumns + artifactFrom + ` WHERE 1=1`
	var args []any
	add := func(cond string, v any) {
		q += ` AND ` + cond
		args = append(args, v)
	}
	if f.ID != 0 {
		add(`a.id = ?`, f.ID)
	}
	if f.BuildID != 0 {
		add(`b.id = ?`, f.BuildID)
	}
	if f.Program != "" {
		add(`p.name = ?`, f.Program)
	}
	if f.Revision != "" {
		add(`r.digest = ?`, f.Revision)
	}
	if f.Kernel != "" {
		add(`k.kid = ?`, f.Kernel)
	}
	if f.Limit <= 0 || f.Limit > 10000 {
		f.Limit = 10000
	}
	q += fmt.Sprintf(` ORDER BY a.id DESC LIMIT %d`, f.Limit)
	return queryList(ctx, d.db, "list artifacts", q, args, scanArtifact)
}

// Artifact returns one artifact.
func (d *DB) Artifact(ctx context.Context, id int64) (api.Artifact, error) {
	as, err := d.Artifacts(ctx, ArtifactFilter{ID: id})
	if err != nil {
		return api.Artifact{}, err
	}
	if len(as) == 0 {
		return api.Artifact{}, fmt.Errorf("artifact %d: %w", id, ErrNotFound)
	}
	return as[0], nil
}

// ArtifactCounts counts done artifacts per kernel id.
func (d *DB) ArtifactCounts(ctx context.Context) (map[string]int, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT k.kid, COUNT(a.id) FROM kernels k
		LEFT JOIN artifacts a ON a.kernel_id = k.id AND a.state = 'done' GROUP BY k.id, k.kid`)
	if err != nil {
		return nil, fmt.Errorf("count artifacts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var kid string
		var n int
		if err := rows.Scan(&kid, &n); err != nil {
			return nil, err
		}
		out[kid] = n
	}
	return out, rows.Err()
}

// PendingArtifacts counts queued and running relocations.
func (d *DB) PendingArtifacts(ctx context.Context) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM artifacts WHERE state IN ('queued', 'running')`).Scan(&n)
	return n, err
}
