// Package queue runs the server's job queues over one lease mechanism:
// builds, relocations and verifications are rows of the store, and a
// Worker claims one with a lease (its owner id and an expiry), keeps the
// lease alive with a heartbeat while the job runs, and records the outcome
// only while it still holds the lease. A job whose worker died is claimed
// again by any worker once its lease runs out, no restart needed; its
// attempts are capped.
//
// Jobs that fail for an infrastructure reason (storage, disk, a deadline,
// an internal error) go back to their queue with exponential backoff
// (Policy.Retry) until their attempts are exhausted.
//
// Idle workers sleep until they are woken (new work was queued, by this
// process or another: store.DB.Notify) or a poll interval passes (a lost
// wake-up, a retry coming due, a lease running out).
package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/store"
)

// PollInterval is how often idle workers look for work without a wake-up.
const PollInterval = 5 * time.Second

// Waker wakes one idle worker; the workers wake each other in turn while
// jobs remain. The zero value is not usable: use NewWaker.
type Waker struct {
	ch chan struct{}
	// changed, when set, wakes idle workers at a store.DB.Notify of the
	// waker's topic by any process sharing the database.
	changed func() <-chan struct{}
}

// NewWaker returns a Waker that Kick wakes, and — when db is not nil —
// every db.Notify(topic), from this process or another.
func NewWaker(db *store.DB, topic store.Topic) *Waker {
	w := &Waker{ch: make(chan struct{}, 1)}
	if db != nil {
		w.changed = func() <-chan struct{} { return db.Changed(topic) }
	}
	return w
}

// subscribe returns the channel of the next cross-process wake-up (nil:
// none).
func (w *Waker) subscribe() <-chan struct{} {
	if w.changed == nil {
		return nil
	}
	return w.changed()
}

// Kick wakes an idle worker, if any; it never blocks.
func (w *Waker) Kick() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// ErrInternal is the error a job that panicked fails with; the panic and
// its stack go to the log only. It is an infrastructure fault: the job is
// retried.
var ErrInternal = fault.ErrInternal

// Policy is a queue's terms for leases and retries. Zero fields take the
// defaults.
type Policy struct {
	// TTL is how long a lease lasts without a heartbeat (default 30s); the
	// heartbeat renews it every TTL/3.
	TTL time.Duration
	// MaxAttempts caps how often a job is claimed (default 5): a job whose
	// worker died, or that failed for an infrastructure reason, that many
	// times fails for good (kind infra).
	MaxAttempts int
	// Backoff is the delay before the first retry (default 2s); it doubles
	// with every attempt, up to MaxBackoff (default 5m).
	Backoff, MaxBackoff time.Duration
}

// Defaults returns p with its zero fields set to the defaults.
func (p Policy) Defaults() Policy {
	if p.TTL <= 0 {
		p.TTL = 30 * time.Second
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.Backoff <= 0 {
		p.Backoff = 2 * time.Second
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 5 * time.Minute
	}
	return p
}

// Retry returns when a job that failed at its attempts-th attempt is tried
// again, or ok false when its attempts are exhausted.
func (p Policy) Retry(attempts int) (at time.Time, ok bool) {
	p = p.Defaults()
	if attempts >= p.MaxAttempts {
		return time.Time{}, false
	}
	d := p.Backoff
	for i := 1; i < attempts && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return time.Now().Add(min(d, p.MaxBackoff)), true
}

// processID names this process among the farm's workers.
var processID = func() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}()

// Owner returns a lease owner id unique to worker n of queue name in this
// process.
func Owner(name string, n int) string { return fmt.Sprintf("%s/%s-%d", processID, name, n) }

// Worker claims and runs the jobs of one queue. J is the store's claimed
// job type (*store.Job, *store.ArtifactJob, *store.VerifyJob).
type Worker[J any] struct {
	// Name labels the queue in logs and metrics ("build", "artifact",
	// "verification").
	Name  string
	Queue store.Queue
	DB    *store.DB
	// Owner is this worker's lease owner id (Owner(Name, n)).
	Owner  string
	Policy Policy
	Log    *slog.Logger
	Wake   *Waker
	// Claim leases a job (store.DB.Claim, ClaimArtifact, ...); it returns
	// an error wrapping store.ErrNotFound when there is none.
	Claim func(context.Context, store.ClaimOptions) (J, error)
	// Lease returns a claimed job's lease; Expired reports whether it was
	// claimed from a worker whose lease ran out.
	Lease   func(J) store.Lease
	Expired func(J) bool
	// Run runs a job and records its outcome. Its context ends when the
	// worker shuts down (Run returns without recording anything: the job
	// is released) or loses the lease (context.Cause is ErrLeaseLost).
	Run func(context.Context, J)
	// Panicked records that Run panicked (with ErrInternal), usually with
	// Worker.Fail.
	Panicked func(context.Context, J, error)
}

// Loop claims and runs jobs until ctx is done. Other claim errors than
// "none" are logged and retried after the next wake-up or poll. After each
// claim Loop kicks Wake, so that another worker looks for more work too.
// When idle, it fails the jobs whose workers died too often
// (store.DB.GiveUpExpired).
//
// Every job runs under recover: a job whose run panics is handed to
// Panicked with ErrInternal, the panic and its stack are logged, and the
// worker goes on with the next job.
func (w *Worker[J]) Loop(ctx context.Context) {
	w.Policy = w.Policy.Defaults()
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	for {
		notified := w.Wake.subscribe() // before the claim: no wake-up slips in between
		job, err := w.Claim(ctx, store.ClaimOptions{Owner: w.Owner, TTL: w.Policy.TTL, MaxAttempts: w.Policy.MaxAttempts})
		switch {
		case err == nil:
			w.Wake.Kick()
			if w.Expired != nil && w.Expired(job) {
				l := w.Lease(job)
				w.Log.Warn(w.Name+" claimed again: its worker's lease ran out", "id", l.ID)
				leaseExpiries.WithLabelValues(w.Name).Inc()
			}
			w.runLeased(ctx, job)
			continue
		case errors.Is(err, store.ErrNotFound):
			w.giveUpExpired(ctx)
		case ctx.Err() != nil:
			return
		default:
			w.Log.Error("claim "+w.Name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-w.Wake.ch:
		case <-notified:
		case <-poll.C:
		}
	}
}

func (w *Worker[J]) giveUpExpired(ctx context.Context) {
	n, err := w.DB.GiveUpExpired(ctx, w.Queue, w.Policy.MaxAttempts)
	if err != nil {
		if ctx.Err() == nil {
			w.Log.Error("give up expired "+w.Name+" jobs", "err", err)
		}
		return
	}
	if n > 0 {
		w.Log.Warn(w.Name+" jobs failed: their workers stopped every time", "jobs", n, "attempts", w.Policy.MaxAttempts)
		exhausted.WithLabelValues(w.Name).Add(float64(n))
	}
}

// runLeased runs one job under its lease's heartbeat, then releases the
// job if Run left it running because the worker is shutting down.
func (w *Worker[J]) runLeased(ctx context.Context, job J) {
	l := w.Lease(job)
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		w.heartbeat(jobCtx, cancel, l)
	}()
	w.runSafely(jobCtx, job)
	cancel(nil)
	<-beat
	if ctx.Err() != nil {
		// Shutting down: give the job back unless Run recorded it.
		err := w.DB.Release(context.WithoutCancel(ctx), l)
		if err != nil && !errors.Is(err, store.ErrLeaseLost) {
			w.Log.Error("release "+w.Name, "id", l.ID, "err", err)
		}
	}
}

// heartbeat renews l every TTL/3 until ctx ends. When the lease is lost
// (or cannot be renewed before it runs out) it cancels the job with
// ErrLeaseLost: another worker may run it by now.
func (w *Worker[J]) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, l store.Lease) {
	t := time.NewTicker(w.Policy.TTL / 3)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, w.Policy.TTL/3)
		err := w.DB.RenewLease(rctx, l, w.Policy.TTL)
		rcancel()
		switch {
		case err == nil:
			last = time.Now()
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrLeaseLost):
		case time.Since(last) < w.Policy.TTL:
			w.Log.Warn("renew "+w.Name+" lease", "id", l.ID, "err", err)
			continue
		}
		w.Log.Warn(w.Name+" lease lost: the job is stopped here", "id", l.ID, "err", err)
		leasesLost.WithLabelValues(w.Name).Inc()
		cancel(store.ErrLeaseLost)
		return
	}
}

// runSafely runs one job, handing it to Panicked if it panics.
func (w *Worker[J]) runSafely(ctx context.Context, job J) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		w.Log.Error("panic in "+w.Name+" job", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		panics.WithLabelValues(w.Name).Inc()
		if w.Panicked != nil {
			// The job must not stay claimed; a panic in Panicked is not caught.
			w.Panicked(context.WithoutCancel(ctx), job, ErrInternal)
		}
	}()
	w.Run(ctx, job)
}

// Fail handles an infrastructure failure of the job leased by l at its
// attempts-th attempt: the job is queued again with backoff and Fail
// returns true; or its attempts are exhausted and Fail returns false: the
// caller records it as failed, with GiveUpReason.
func (w *Worker[J]) Fail(ctx context.Context, l store.Lease, attempts int, cause error) (retried bool, err error) {
	at, ok := w.Policy.Retry(attempts)
	if !ok {
		exhausted.WithLabelValues(w.Name).Inc()
		return false, nil
	}
	if err := w.DB.Retry(ctx, l, "will retry: "+cause.Error(), at); err != nil {
		return false, err
	}
	retries.WithLabelValues(w.Name).Inc()
	w.Log.Warn(w.Name+" failed for an infrastructure reason: retrying", "id", l.ID, "attempt", attempts,
		"at", at.UTC().Format(time.RFC3339), "err", cause)
	return true, nil
}

// GiveUpReason is the recorded reason of a job whose attempts ran out.
func GiveUpReason(attempts int, cause error) string {
	return fmt.Sprintf("gave up after %d attempts: %v", attempts, cause)
}

var (
	panics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpfarm_job_panics_total",
		Help: "Jobs (builds, relocations, verifications) that panicked (an internal error, retried), by queue.",
	}, []string{"queue"})
	retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpfarm_job_retries_total",
		Help: "Jobs queued again with backoff after an infrastructure failure, by queue.",
	}, []string{"queue"})
	leaseExpiries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpfarm_job_lease_expiries_total",
		Help: "Jobs claimed again because the lease of the worker running them ran out, by queue.",
	}, []string{"queue"})
	leasesLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpfarm_job_leases_lost_total",
		Help: "Jobs this process stopped because it could no longer hold their lease, by queue.",
	}, []string{"queue"})
	exhausted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpfarm_job_attempts_exhausted_total",
		Help: "Jobs failed for good after their last attempt (infrastructure failures, dead workers), by queue.",
	}, []string{"queue"})
)

// Collectors returns the queues' metrics, for registering with a server's
// registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{panics, retries, leaseExpiries, leasesLost, exhausted}
}
