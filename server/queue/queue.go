// Package queue runs the server's SQLite-backed job queues: workers claim
// a job, run it, and otherwise sleep until they are woken (new work was
// queued) or a poll interval passes (work queued by another process, or a
// lost wake-up).
package queue

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/bpfarm/bpfarm/server/store"
)

// PollInterval is how often idle workers look for work without a wake-up.
const PollInterval = 5 * time.Second

// Waker wakes one idle worker; the workers wake each other in turn while
// jobs remain. The zero value is not usable: use NewWaker.
type Waker struct{ ch chan struct{} }

// NewWaker returns a Waker.
func NewWaker() *Waker { return &Waker{ch: make(chan struct{}, 1)} }

// Kick wakes an idle worker, if any; it never blocks.
func (w *Waker) Kick() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// Loop claims and runs jobs until ctx is done. claim returns an error
// wrapping store.ErrNotFound when the queue is empty; other claim errors
// are logged and retried after the next wake-up or poll. After each claim
// Loop kicks w, so that another worker looks for more work too.
func Loop[J any](ctx context.Context, log *slog.Logger, what string, w *Waker,
	claim func(context.Context) (J, error), run func(context.Context, J)) {
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	for {
		job, err := claim(ctx)
		switch {
		case err == nil:
			w.Kick()
			run(ctx, job)
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
		case <-poll.C:
		}
	}
}
