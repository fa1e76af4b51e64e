package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Queue names one of the store's leased job queues: a table whose rows are
// jobs (queued → running → finished) that workers claim with a lease.
type Queue string

// The job queues.
const (
	QueueBuilds        Queue = "builds"
	QueueArtifacts     Queue = "artifacts" // relocations
	QueueVerifications Queue = "verifications"
)

// queueSpec is what differs between the queues' tables.
type queueSpec struct {
	failed   string // final state of a job that failed
	errorCol string // column holding the reason of a failure
	giveUp   string // extra assignments when giving up (builds: the kind)
	started  bool   // the table has started_at
}

var queueSpecs = map[Queue]queueSpec{
	QueueBuilds:        {failed: "failed", errorCol: "error", giveUp: ", error_kind = 'infra'", started: true},
	QueueArtifacts:     {failed: "error", errorCol: "error"},
	QueueVerifications: {failed: "error", errorCol: "reason", started: true},
}

func (q Queue) spec() queueSpec {
	s, ok := queueSpecs[q]
	if !ok {
		panic(fmt.Sprintf("store: unknown job queue %q", string(q)))
	}
	return s
}

// Lease is a claimed job's hold: the job is its Owner's until the lease
// runs out, unless the owner's heartbeat renews it (RenewLease). Every
// change a worker makes to its job is conditional on still holding it.
type Lease struct {
	Queue Queue
	ID    int64
	Owner string
}

// ErrLeaseLost is returned when a worker changes a job whose lease it no
// longer holds: the lease ran out and another worker claimed the job, or
// the job was queued again.
var ErrLeaseLost = errors.New("lease lost")

// ClaimOptions are a worker's terms for claiming a job.
type ClaimOptions struct {
	// Owner names the worker; unique per worker of every process.
	Owner string
	// TTL is how long the lease lasts without a heartbeat.
	TTL time.Duration
	// MaxAttempts: a running job whose lease ran out is not claimed again
	// once it was claimed this many times (GiveUpExpired fails it).
	MaxAttempts int
}

// claimJob claims the first job of q that from/where/order select
// (columns: the job table aliased as j, selecting j.id and j.state), in tx:
// a queued job past its not_before, or a running job whose lease ran out
// and that has attempts left. It returns ErrNotFound when there is none.
func (d *DB) claimJob(ctx context.Context, tx *sqlTx, q Queue, o ClaimOptions, from, order string, args ...any) (id int64, attempts int, expired bool, err error) {
	t := now()
	var state string
	a := append([]any{t, t, o.MaxAttempts}, args...)
	err = tx.QueryRowContext(ctx, `SELECT j.id, j.state FROM `+from+`
		WHERE (j.state = 'queued' AND (j.not_before IS NULL OR j.not_before <= ?))
			OR (j.state = 'running' AND (j.lease_expires IS NULL OR j.lease_expires < ?) AND j.attempts < ?)
		ORDER BY `+order+` LIMIT 1`+d.skipLocked("j"), a...).Scan(&id, &state) // PostgreSQL: FOR UPDATE OF j SKIP LOCKED
	if err != nil {
		return 0, 0, false, notFound(err)
	}
	set := ``
	if q.spec().started {
		set = `, started_at = ?`
	}
	ua := []any{o.Owner, t.Add(o.TTL)}
	if q.spec().started {
		ua = append(ua, t)
	}
	ua = append(ua, id, state)
	err = tx.QueryRowContext(ctx, `UPDATE `+string(q)+` SET state = 'running', lease_owner = ?, lease_expires = ?,
		attempts = attempts + 1, not_before = NULL`+set+` WHERE id = ? AND state = ? RETURNING attempts`, ua...).Scan(&attempts)
	if err != nil {
		return 0, 0, false, notFound(err)
	}
	return id, attempts, state == "running", nil
}

// RenewLease extends a held lease to ttl from now (a worker's heartbeat).
// It returns ErrLeaseLost when the job is no longer the owner's.
func (d *DB) RenewLease(ctx context.Context, l Lease, ttl time.Duration) error {
	res, err := d.db.ExecContext(ctx, `UPDATE `+string(l.Queue)+` SET lease_expires = ?
		WHERE id = ? AND state = 'running' AND lease_owner = ?`, now().Add(ttl), l.ID, l.Owner)
	if err != nil {
		return fmt.Errorf("renew lease of %s %d: %w", l.Queue, l.ID, err)
	}
	return leaseHeld(res, l)
}

// Release gives a job back to its queue without counting the attempt (the
// worker is shutting down).
func (d *DB) Release(ctx context.Context, l Lease) error {
	res, err := d.db.ExecContext(ctx, `UPDATE `+string(l.Queue)+` SET state = 'queued', lease_owner = '',
		lease_expires = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END
		WHERE id = ? AND state = 'running' AND lease_owner = ?`, l.ID, l.Owner)
	if err != nil {
		return fmt.Errorf("release %s %d: %w", l.Queue, l.ID, err)
	}
	return leaseHeld(res, l)
}

// Retry gives a job that failed for an infrastructure reason back to its
// queue, to be claimed again from notBefore on; reason is shown meanwhile.
func (d *DB) Retry(ctx context.Context, l Lease, reason string, notBefore time.Time) error {
	s := l.Queue.spec()
	res, err := d.db.ExecContext(ctx, `UPDATE `+string(l.Queue)+` SET state = 'queued', lease_owner = '',
		lease_expires = NULL, not_before = ?, `+s.errorCol+` = ?
		WHERE id = ? AND state = 'running' AND lease_owner = ?`, notBefore.UTC(), reason, l.ID, l.Owner)
	if err != nil {
		return fmt.Errorf("retry %s %d: %w", l.Queue, l.ID, err)
	}
	return leaseHeld(res, l)
}

// GiveUpExpired fails the running jobs of q whose lease ran out after
// maxAttempts claims: their workers died every time (a job that kills its
// worker). They fail as infrastructure failures with a reason saying so.
func (d *DB) GiveUpExpired(ctx context.Context, q Queue, maxAttempts int) (int, error) {
	s := q.spec()
	t := now()
	res, err := d.db.ExecContext(ctx, `UPDATE `+string(q)+` SET state = '`+s.failed+`'`+s.giveUp+`,
		`+s.errorCol+` = ?, lease_owner = '', lease_expires = NULL, finished_at = ?
		WHERE state = 'running' AND (lease_expires IS NULL OR lease_expires < ?) AND attempts >= ?`,
		fmt.Sprintf("gave up after %d attempts: the worker running it stopped each time (its lease ran out)", maxAttempts),
		t, t, maxAttempts)
	if err != nil {
		return 0, fmt.Errorf("give up expired %s: %w", q, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// leaseHeld turns "no row changed" into ErrLeaseLost.
func leaseHeld(res sql.Result, l Lease) error {
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%s %d (owner %s): %w", l.Queue, l.ID, l.Owner, ErrLeaseLost)
	}
	return nil
}

// finishCond is the WHERE clause of a change that needs the lease l.
const finishCond = ` WHERE id = ? AND state = 'running' AND lease_owner = ?`

// QueueMissingArtifacts repairs fan-out that a crash or an older version
// left incomplete: it queues the relocation of every succeeded build for
// every kernel of its arch that it lacks an artifact for, where the build
// would have got one — the kernel existed when the build finished, or the
// build is of its program's latest revision (a new kernel relocates
// those). It returns how many it queued.
func (d *DB) QueueMissingArtifacts(ctx context.Context) (int, error) {
	res, err := d.db.ExecContext(ctx, `INSERT INTO artifacts (build_id, kernel_id, state, created_at)
		SELECT b.id, k.id, 'queued', ? FROM builds b JOIN kernels k ON k.arch = b.arch
		WHERE b.state = 'succeeded' AND (b.kernel_id IS NULL OR b.kernel_id = k.id)
			AND (k.created_at <= b.finished_at OR (b.kernel_id IS NULL AND b.revision_id IN (
				SELECT (SELECT r.id FROM revisions r WHERE r.program_id = p.id ORDER BY r.created_at DESC, r.id DESC LIMIT 1)
				FROM programs p)))
			AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.build_id = b.id AND a.kernel_id = k.id)
		ON CONFLICT (build_id, kernel_id) DO NOTHING`, now())
	if err != nil {
		return 0, fmt.Errorf("queue missing artifacts: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
