package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Default limits of a Client (see Client.CallTimeout, IdleTimeout and
// AnswerTimeout).
const (
	DefaultCallTimeout   = 5 * time.Minute
	DefaultIdleTimeout   = 2 * time.Minute
	DefaultAnswerTimeout = 10 * time.Minute
)

// streamThreshold is the size from which a request body is an upload,
// bounded by its progress rather than by CallTimeout. Bodies whose size is
// unknown (files, pipes) are uploads too.
const streamThreshold = 1 << 20

// StalledError is the failure of an upload that stopped making progress:
// no byte sent or received for Idle, or no answer within Idle after the
// last byte of the request.
type StalledError struct {
	// Phase is "sending", "waiting for the answer" or "receiving".
	Phase string
	// Idle is the limit that was reached.
	Idle time.Duration
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("no progress for %s while %s", e.Idle, e.Phase)
}

// isUpload reports whether body is large or of unknown size.
func isUpload(body io.Reader) bool {
	if body == nil {
		return false
	}
	if l, ok := body.(interface{ Len() int }); ok {
		return l.Len() >= streamThreshold
	}
	return true
}

const (
	phaseSending = iota
	phaseWaiting
	phaseReceiving
)

// transfer watches one upload: every byte moved (sent or received) resets
// its idle clock, and a watchdog cancels the request when the clock passes
// the phase's limit.
type transfer struct {
	idle, answer time.Duration
	last         atomic.Int64 // unix nanoseconds of the last progress
	phase        atomic.Int32
	cancel       context.CancelCauseFunc
	stop         chan struct{}
	stopOnce     sync.Once
}

func newTransfer(ctx context.Context, idle, answer time.Duration) (*transfer, context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := &transfer{idle: idle, answer: answer, cancel: cancel, stop: make(chan struct{})}
	t.touch()
	go t.watch()
	return t, ctx
}

func (t *transfer) touch() { t.last.Store(time.Now().UnixNano()) }

func (t *transfer) watch() {
	tick := time.NewTicker(min(t.idle, t.answer) / 8)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			limit, phase := t.idle, "sending"
			switch t.phase.Load() {
			case phaseWaiting:
				limit, phase = t.answer, "waiting for the answer"
			case phaseReceiving:
				phase = "receiving"
			}
			if time.Since(time.Unix(0, t.last.Load())) > limit {
				t.cancel(&StalledError{Phase: phase, Idle: limit})
				return
			}
		}
	}
}

// done ends the watch and releases the request's context.
func (t *transfer) done() {
	t.stopOnce.Do(func() {
		close(t.stop)
		t.cancel(nil)
	})
}

// setPhase moves to phase p and restarts the idle clock.
func (t *transfer) setPhase(p int32) {
	t.phase.Store(p)
	t.touch()
}

// sendBody counts the request body's progress; its end starts the wait for
// the answer.
type sendBody struct {
	r io.Reader
	t *transfer
}

func (b *sendBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.t.touch()
	}
	if err == io.EOF {
		b.t.setPhase(phaseWaiting)
	}
	return n, err
}

// recvBody counts the answer's progress and ends the watch on Close.
type recvBody struct {
	rc io.ReadCloser
	t  *transfer
}

func (b *recvBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.t.touch()
	}
	return n, err
}

func (b *recvBody) Close() error {
	err := b.rc.Close()
	b.t.done()
	return err
}

// upload sends req, whose body is an upload, bounded by progress rather
// than by a total time.
func (c *Client) upload(ctx context.Context, req *http.Request) (*http.Response, error) {
	idle, answer := c.IdleTimeout, c.AnswerTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if answer <= 0 {
		answer = DefaultAnswerTimeout
	}
	t, tctx := newTransfer(ctx, idle, answer)
	req = req.WithContext(tctx)
	if req.Body != nil {
		req.Body = io.NopCloser(&sendBody{r: req.Body, t: t})
	}
	resp, err := c.stream.Do(req)
	if err != nil {
		// The watchdog's verdict, taken before done cancels the context
		// itself: a stall is the failure; anything else (a connection
		// refused, reset) is err, which decides whether to fail over.
		cause := context.Cause(tctx)
		t.done()
		var stalled *StalledError
		if errors.As(cause, &stalled) && ctx.Err() == nil {
			return nil, cause
		}
		return nil, err
	}
	t.setPhase(phaseReceiving)
	resp.Body = &recvBody{rc: resp.Body, t: t}
	return resp, nil
}
