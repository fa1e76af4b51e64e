package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bpfarm/bpfarm/api"
)

// Verification job states (the same words as artifacts').
const (
	verifyQueued  = "queued"
	verifyRunning = "running"
	verifyDone    = "done"
	verifyError   = "error"
)

// QueueVerifications queues a verification for every done artifact whose
// kernel has an image and that has none yet, and queues again the
// finished verifications whose kernel got another image since. It returns
// how many were queued. FinishArtifact and PutKernel do this in their own
// transactions; this repairs what is missing (the verifier's sweep).
func (d *DB) QueueVerifications(ctx context.Context) (int, error) {
	var total int
	err := d.tx(ctx, func(tx *sqlTx) error {
		var err error
		total, err = queueVerifications(ctx, tx, `1 = 1`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("queue verifications: %w", err)
	}
	return total, nil
}

// queueVerifications queues the verifications of the done artifacts that
// cond (on artifacts a, kernels k) selects, as QueueVerifications does.
func queueVerifications(ctx context.Context, db execer, cond string, args ...any) (int, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO verifications (artifact_id, kernel_image, state, created_at)
		SELECT a.id, k.image_blob, 'queued', ? FROM artifacts a JOIN kernels k ON k.id = a.kernel_id
		WHERE a.state = 'done' AND k.image_blob != '' AND (a.relocated_blob != '' OR a.minbtf_blob != '')
			AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.artifact_id = a.id) AND `+cond+`
		ON CONFLICT (artifact_id) DO NOTHING`, append([]any{now()}, args...)...)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	total := int(n)
	const image = `(SELECT k.image_blob FROM artifacts a JOIN kernels k ON k.id = a.kernel_id
		WHERE a.id = verifications.artifact_id)`
	res, err = db.ExecContext(ctx, `UPDATE verifications SET state = 'queued', attempts = 0, not_before = NULL,
		kernel_image = `+image+`
		WHERE state IN ('done', 'error') AND kernel_image != `+image+` AND `+image+` != ''
			AND artifact_id IN (SELECT a.id FROM artifacts a JOIN kernels k ON k.id = a.kernel_id WHERE `+cond+`)`, args...)
	if err != nil {
		return 0, err
	}
	n, _ = res.RowsAffected()
	return total + int(n), nil
}

// RequeueVerification queues the verification of an artifact again (or
// for the first time). It returns ErrNotFound when the artifact is not
// done or its kernel has no image, and ErrConflict while it runs.
func (d *DB) RequeueVerification(ctx context.Context, artifactID int64) error {
	return d.tx(ctx, func(tx *sqlTx) error {
		var image, state string
		err := tx.QueryRowContext(ctx, `SELECT k.image_blob, a.state FROM artifacts a JOIN kernels k ON k.id = a.kernel_id
			WHERE a.id = ?`, artifactID).Scan(&image, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("artifact %d: %w", artifactID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if state != api.ArtifactDone {
			return fmt.Errorf("artifact %d is %s, not done: %w", artifactID, state, ErrConflict)
		}
		if image == "" {
			return fmt.Errorf("the kernel of artifact %d has no image to boot (attach one with bpfarm kernels import --image): %w", artifactID, ErrNotFound)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO verifications (artifact_id, kernel_image, state, created_at)
			VALUES (?, ?, 'queued', ?)
			ON CONFLICT (artifact_id) DO UPDATE SET state = 'queued', attempts = 0, not_before = NULL,
				kernel_image = excluded.kernel_image
			WHERE verifications.state != 'running'`, artifactID, image, now())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("the verification of artifact %d is running: %w", artifactID, ErrConflict)
		}
		return nil
	})
}

// VerifyJob is a claimed verification: the artifact and its kernel.
type VerifyJob struct {
	Lease
	Artifact api.Artifact
	Kernel   Kernel
	Attempts int
	// Expired is set when the job was claimed from a worker whose lease
	// ran out.
	Expired bool
}

// ClaimVerification leases the oldest claimable verification (queued, or
// running with a lease that ran out) to o.Owner and marks it running. It
// returns ErrNotFound when there is none.
func (d *DB) ClaimVerification(ctx context.Context, o ClaimOptions) (*VerifyJob, error) {
	j := VerifyJob{Lease: Lease{Queue: QueueVerifications, Owner: o.Owner}}
	var artifactID, kernelID int64
	err := d.tx(ctx, func(tx *sqlTx) error {
		var err error
		j.ID, j.Attempts, j.Expired, err = d.claimJob(ctx, tx, QueueVerifications, o, `verifications j`, `j.id`)
		if err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT v.artifact_id, a.kernel_id FROM verifications v
			JOIN artifacts a ON a.id = v.artifact_id WHERE v.id = ?`, j.ID).Scan(&artifactID, &kernelID)
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("claim verification: %w", err)
	}
	if j.Artifact, err = d.Artifact(ctx, artifactID); err != nil {
		return nil, err
	}
	if j.Kernel, err = d.KernelByID(ctx, kernelID); err != nil {
		return nil, err
	}
	return &j, nil
}

// VerifyOutcome is the outcome of a verification.
type VerifyOutcome struct {
	// Error is set when the server could not run it: state error.
	Error       string
	Result      string
	Reason      string
	Programs    []api.ProgramVerification
	KernelImage string
	Release     string
	Accel       string
	Runner      string
	ConsoleTail string
	ConsoleBlob string
	BootMS      int64
	DurationMS  int64
	// ManifestBlob, when set, replaces the artifact's manifest (re-signed
	// with the verdicts), provided it is still OldManifestBlob.
	ManifestBlob    string
	OldManifestBlob string
}

// FinishVerification records the outcome of the verification leased by l
// and, in the same transaction, the artifact's new manifest. It returns
// ErrLeaseLost when l is no longer held.
func (d *DB) FinishVerification(ctx context.Context, l Lease, artifactID int64, o VerifyOutcome) error {
	state := verifyDone
	if o.Error != "" {
		state, o.Reason = verifyError, o.Error
	}
	if o.Programs == nil {
		o.Programs = []api.ProgramVerification{}
	}
	progs, err := json.Marshal(o.Programs)
	if err != nil {
		return err
	}
	return d.tx(ctx, func(tx *sqlTx) error {
		res, err := tx.ExecContext(ctx, `UPDATE verifications SET state = ?, result = ?, reason = ?, programs = ?,
			kernel_image = CASE WHEN ? != '' THEN ? ELSE kernel_image END, release = ?, accel = ?, runner = ?,
			console_tail = ?, console_blob = ?, boot_ms = ?, duration_ms = ?, finished_at = ?,
			lease_owner = '', lease_expires = NULL`+finishCond, state, o.Result, o.Reason, string(progs), o.KernelImage,
			o.KernelImage, o.Release, o.Accel, o.Runner, o.ConsoleTail, o.ConsoleBlob, o.BootMS, o.DurationMS, now(),
			l.ID, l.Owner)
		if err != nil {
			return fmt.Errorf("finish verification %d: %w", l.ID, err)
		}
		if err := leaseHeld(res, l); err != nil {
			return fmt.Errorf("finish verification: %w", err)
		}
		if o.ManifestBlob == "" {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE artifacts SET manifest_blob = ? WHERE id = ? AND manifest_blob = ?`,
			o.ManifestBlob, artifactID, o.OldManifestBlob)
		if err != nil {
			return fmt.Errorf("artifact %d: new manifest: %w", artifactID, err)
		}
		return nil
	})
}

// RequeueSkipped queues again the verifications skipped for want of a
// qemu or runner for their arch: a verifier starting may have them now.
func (d *DB) RequeueSkipped(ctx context.Context) (int64, error) {
	res, err := d.db.ExecContext(ctx, `UPDATE verifications SET state = 'queued', attempts = 0, not_before = NULL
		WHERE state = 'done' AND result = 'skipped'`)
	if err != nil {
		return 0, fmt.Errorf("requeue skipped verifications: %w", err)
	}
	return res.RowsAffected()
}

// VerificationFilter selects verifications; zero fields match everything.
type VerificationFilter struct {
	ID          int64
	ArtifactIDs []int64
	Program     string
	Revision    string
	Kernel      string
	State       string
	Result      string
	Limit       int
}

const verificationColumns = `v.id, v.artifact_id, p.name, r.digest, b.id, b.arch, k.kid, v.state, v.result, v.reason,
	v.programs, v.release, v.accel, v.console_tail, v.console_blob, v.boot_ms, v.duration_ms, v.attempts,
	v.created_at, v.started_at, v.finished_at`

const verificationFrom = ` FROM verifications v JOIN artifacts a ON a.id = v.artifact_id JOIN builds b ON b.id = a.build_id
	JOIN kernels k ON k.id = a.kernel_id JOIN revisions r ON r.id = b.revision_id JOIN programs p ON p.id = r.program_id`

func scanVerification(row rowScanner) (api.Verification, error) {
	var (
		v                 api.Verification
		progs, consoleBlb string
		started, finished sql.NullTime
	)
	err := row.Scan(&v.ID, &v.ArtifactID, &v.Program, &v.Revision, &v.BuildID, &v.Arch, &v.Kernel, &v.State, &v.Result,
		&v.Reason, &progs, &v.Release, &v.Accel, &v.Console, &consoleBlb, &v.BootMS, &v.DurationMS, &v.Attempts,
		&v.CreatedAt, &started, &finished)
	if err != nil {
		return v, notFound(err)
	}
	v.CreatedAt, v.StartedAt, v.FinishedAt = v.CreatedAt.UTC(), nullTime(started), nullTime(finished)
	if err := json.Unmarshal([]byte(progs), &v.Programs); err != nil {
		return v, fmt.Errorf("verification %d programs: %w", v.ID, err)
	}
	if v.Programs == nil {
		v.Programs = []api.ProgramVerification{}
	}
	if consoleBlb != "" {
		v.ConsoleLog = &api.Blob{Digest: consoleBlb}
	}
	return v, nil
}

// Verifications lists verifications, newest first.
func (d *DB) Verifications(ctx context.Context, f VerificationFilter) ([]api.Verification, error) {
	q := `SELECT ` + verificationColumns + verificationFrom + ` WHERE 1=1`
	var args []any
	add := func(cond string, v any) {
		q += ` AND ` + cond
		args = append(args, v)
	}
	if f.ID != 0 {
		add(`v.id = ?`, f.ID)
	}
	if len(f.ArtifactIDs) > 0 {
		q += ` AND v.artifact_id IN (?` + strings.Repeat(`, ?`, len(f.ArtifactIDs)-1) + `)`
		for _, id := range f.ArtifactIDs {
			args = append(args, id)
		}
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
	if f.State != "" {
		add(`v.state = ?`, f.State)
	}
	if f.Result != "" {
		add(`v.result = ?`, f.Result)
	}
	if f.Limit <= 0 || f.Limit > 10000 {
		f.Limit = 10000
	}
	q += fmt.Sprintf(` ORDER BY v.id DESC LIMIT %d`, f.Limit)
	return queryList(ctx, d.db, "list verifications", q, args, scanVerification)
}

// Verification returns one verification.
func (d *DB) Verification(ctx context.Context, id int64) (api.Verification, error) {
	vs, err := d.Verifications(ctx, VerificationFilter{ID: id})
	if err != nil {
		return api.Verification{}, err
	}
	if len(vs) == 0 {
		return api.Verification{}, fmt.Errorf("verification %d: %w", id, ErrNotFound)
	}
	return vs[0], nil
}

// WithVerifications sets the Verification of each artifact that has one.
func (d *DB) WithVerifications(ctx context.Context, as []api.Artifact) error {
	for start := 0; start < len(as); start += 500 {
		chunk := as[start:min(start+500, len(as))]
		ids := make([]int64, len(chunk))
		for i, a := range chunk {
			ids[i] = a.ID
		}
		vs, err := d.Verifications(ctx, VerificationFilter{ArtifactIDs: ids})
		if err != nil {
			return err
		}
		by := map[int64]*api.Verification{}
		for i := range vs {
			by[vs[i].ArtifactID] = &vs[i]
		}
		for i := range chunk {
			chunk[i].Verification = by[chunk[i].ID]
		}
	}
	return nil
}

// VerificationCounts counts verifications by state, and finished ones by
// result.
func (d *DB) VerificationCounts(ctx context.Context) (states, results map[string]int, err error) {
	rows, err := d.db.QueryContext(ctx, `SELECT state, result, COUNT(*) FROM verifications GROUP BY state, result`)
	if err != nil {
		return nil, nil, fmt.Errorf("count verifications: %w", err)
	}
	defer rows.Close()
	states, results = map[string]int{}, map[string]int{}
	for rows.Next() {
		var state, result string
		var n int
		if err := rows.Scan(&state, &result, &n); err != nil {
			return nil, nil, err
		}
		states[state] += n
		if result != "" {
			results[result] += n
		}
	}
	return states, results, rows.Err()
}

// SetKernelImage attaches an image (a stored blob) to a kernel, replacing
// any earlier one, and in the same transaction queues (again) the
// verifications of the kernel's done artifacts.
func (d *DB) SetKernelImage(ctx context.Context, kid, digest string, size int64) (Kernel, error) {
	err := d.tx(ctx, func(tx *sqlTx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `UPDATE kernels SET image_blob = ?, image_size = ? WHERE kid = ? RETURNING id`,
			digest, size, kid).Scan(&id)
		if err != nil {
			return notFound(err)
		}
		_, err = queueVerifications(ctx, tx, `k.id = ?`, id)
		return err
	})
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: set image: %w", kid, err)
	}
	return d.Kernel(ctx, kid)
}
