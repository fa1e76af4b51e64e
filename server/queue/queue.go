// Package queue runs the server's database-backed job queues: workers
// claim a job, run it, and otherwise sleep until they are woken (new work
// was queued, by this process or another: store.DB.Notify) or a poll
// interval passes (a lost wake-up).
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
// its stack go to the log only.
var ErrInternal = errors.New("internal error")

// Loop claims and runs jobs until ctx is done. claim returns an error
// wrapping store.ErrNotFound when the queue is empty; other claim errors
// are logged and retried after the next wake-up or poll. After each claim
// Loop kicks w, so that another worker looks for more work too.
//
// Every job runs under recover: a job whose run panics is failed with
// fail(ctx, job, ErrInternal), the panic and its stack are logged, and the
// worker goes on with the next job.
func Loop[J any](ctx context.Context, log *slog.Logger, what string, w *Waker,
	claim func(context.Context) (J, error), run func(context.Context, J), fail func(context.Context, J, error)) {
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	for {
		notified := w.subscribe() // before the claim: no wake-up slips in between
		job, err := claim(ctx)
		switch {
		case err == nil:
			w.Kick()
			runSafely(ctx, log, what, job, run, fail)
			continue
		case errors.Is(err, store.ErrNotFound):
		case ctx.Err() != nil:
			return
		default:
			log.Error("claim "+what, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-w.ch:
		case <-notified:
		case <-poll.C:
		}
	}
}

// runSafely runs one job, failing it with ErrInternal if it panics.
func runSafely[J any](ctx context.Context, log *slog.Logger, what string, job J,
	run func(context.Context, J), fail func(context.Context, J, error)) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		log.Error("panic in "+what+" job: failed with internal error", "panic", fmt.Sprint(v),
			"stack", string(debug.Stack()))
		panics.WithLabelValues(what).Inc()
		if fail != nil {
			// The job must not stay claimed; a panic in fail is not caught.
			fail(context.WithoutCancel(ctx), job, ErrInternal)
		}
	}()
	run(ctx, job)
}

// panics counts jobs that panicked, by queue.
var panics = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "bpfarm_job_panics_total",
	Help: "Jobs (builds, relocations, verifications) that panicked and were failed with an internal error, by queue.",
}, []string{"queue"})

// Collector returns the queue's metrics, for registering with a server's
// registry.
func Collector() prometheus.Collector { return panics }
