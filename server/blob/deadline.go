package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/server/fault"
)

// Deadlines bound how long a Store may keep its callers waiting.
type Deadlines struct {
	// Call bounds each of Stat, Delete, Check and the opening of a blob
	// by Get (default DefaultCallTimeout).
	Call time.Duration
	// Idle bounds the time the store spends without progress on a
	// streamed operation (default DefaultIdleTimeout): a Put may run as
	// long as it takes, but the store must not keep it waiting for Idle
	// at a stretch; each Read of a Get's reader, and the time between
	// two entries of a List, must end within Idle. Time spent by the
	// caller (reading a Put's content, handling a listed entry, between
	// two Reads) does not count.
	Idle time.Duration
	// Fault is the fault sentinel a missed deadline wraps (default
	// fault.ErrDeadline); a store that does not answer in time is
	// usually down, so S3 stores pass fault.ErrStorageUnavailable.
	Fault error
}

// Default deadlines of WithDeadlines.
const (
	DefaultCallTimeout = 10 * time.Second
	DefaultIdleTimeout = 20 * time.Second
)

// WithDeadlines returns a Store that bounds every call to s by d: a store
// that freezes makes calls fail once their deadline passes, with an error
// wrapping d.Fault, instead of hanging. Large transfers are not cut as
// long as they progress.
//
// s must stop (and return) once its context is done.
func WithDeadlines(s Store, d Deadlines) Store {
	if d.Call <= 0 {
		d.Call = DefaultCallTimeout
	}
	if d.Idle <= 0 {
		d.Idle = DefaultIdleTimeout
	}
	if d.Fault == nil {
		d.Fault = fault.ErrDeadline
	}
	return &deadlined{s: s, d: d}
}

type deadlined struct {
	s Store
	d Deadlines
}

// deadlineError is a call to a store that ran past its deadline.
type deadlineError struct {
	op      string
	timeout time.Duration
	idle    bool
}

func (e *deadlineError) Error() string {
	if e.idle {
		return fmt.Sprintf("blob %s: no progress from the store for %s", e.op, e.timeout)
	}
	return fmt.Sprintf("blob %s: no answer from the store within %s", e.op, e.timeout)
}

// classify turns the error of a call into a fault when a deadline of
// this decorator (the cause of ctx) is what ended the call.
func (s *deadlined) classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var dl *deadlineError
	if !errors.As(context.Cause(ctx), &dl) {
		return err
	}
	// Not fault.Wrap: err, ended by the deadline, may carry another
	// classification (a context's deadline is fault.ErrDeadline).
	if errors.Is(err, dl) {
		return fmt.Errorf("%w: %w", s.d.Fault, err)
	}
	return fmt.Errorf("%w: %w (%v)", s.d.Fault, dl, err)
}

// call runs f with the per-call deadline.
func (s *deadlined) call(ctx context.Context, op string, f func(context.Context) error) error {
	dl := &deadlineError{op: op, timeout: s.d.Call}
	ctx, cancel := context.WithTimeoutCause(ctx, s.d.Call, dl)
	defer cancel()
	return s.classify(ctx, f(ctx))
}

// Stat implements Store.
func (s *deadlined) Stat(ctx context.Context, d Digest) (info Info, err error) {
	err = s.call(ctx, "stat", func(ctx context.Context) error {
		info, err = s.s.Stat(ctx, d)
		return err
	})
	return info, err
}

// Delete implements Store.
func (s *deadlined) Delete(ctx context.Context, d Digest) error {
	return s.call(ctx, "delete", func(ctx context.Context) error { return s.s.Delete(ctx, d) })
}

// Check implements Store.
func (s *deadlined) Check(ctx context.Context) error {
	return s.call(ctx, "check", s.s.Check)
}

// Put implements Store: the store must not keep the Put waiting for Idle
// at a stretch; reading r does not count.
func (s *deadlined) Put(ctx context.Context, r io.Reader, size int64, want Digest) (Info, error) {
	w, ctx := s.watch(ctx, "put")
	defer w.stop()
	info, err := s.s.Put(ctx, &pausingReader{r: r, w: w}, size, want)
	return info, s.classify(ctx, err)
}

// Get implements Store: opening the blob must end within Call, and every
// Read of the returned reader within Idle.
func (s *deadlined) Get(ctx context.Context, d Digest) (io.ReadCloser, error) {
	// The reader outlives Get: its context must not end with Get's
	// deadline, only be canceled when a deadline passes.
	w, ctx := s.watch(ctx, "get")
	w.set(&deadlineError{op: "get", timeout: s.d.Call}, s.d.Call)
	rc, err := s.s.Get(ctx, d)
	if err != nil {
		w.stop()
		return nil, s.classify(ctx, err)
	}
	w.set(&deadlineError{op: "read", timeout: s.d.Idle, idle: true}, 0)
	return &deadlineReader{rc: rc, w: w, ctx: ctx, s: s}, nil
}

// List implements Store: the store must produce each entry within Idle
// of the previous one; fn's time does not count.
func (s *deadlined) List(ctx context.Context, fn func(Entry) error) error {
	w, ctx := s.watch(ctx, "list")
	defer w.stop()
	var fnErr error
	err := s.s.List(ctx, func(e Entry) error {
		w.pause()
		defer w.resume()
		fnErr = fn(e)
		return fnErr
	})
	if err != nil && err == fnErr {
		return err // fn's own error, passed through
	}
	return s.classify(ctx, err)
}

// watch returns a watchdog that cancels the returned context once the
// store has made no progress for Idle, running from now.
func (s *deadlined) watch(ctx context.Context, op string) (*watchdog, context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{idle: s.d.Idle, cancel: cancel, dl: &deadlineError{op: op, timeout: s.d.Idle, idle: true}}
	w.t = time.AfterFunc(s.d.Idle, w.fire)
	return w, ctx
}

// watchdog cancels an operation's context when its timer fires. The
// timer runs while the store works and is paused while the caller does.
type watchdog struct {
	mu     sync.Mutex
	t      *time.Timer
	idle   time.Duration
	cancel context.CancelCauseFunc
	dl     *deadlineError
	fired  bool
}

func (w *watchdog) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fired = true
	w.cancel(w.dl)
}

func (w *watchdog) pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Stop()
}

func (w *watchdog) resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.fired {
		w.t.Reset(w.idle)
	}
}

// set replaces the deadline the watchdog reports and restarts its timer
// for d, or stops it for d == 0.
func (w *watchdog) set(dl *deadlineError, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dl = dl
	w.t.Stop()
	if d > 0 && !w.fired {
		w.t.Reset(d)
	}
}

// stop ends the watch and releases its context.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Stop()
	w.fired = true
	w.cancel(context.Canceled)
}

// pausingReader pauses a Put's watchdog while the Put reads its content.
type pausingReader struct {
	r io.Reader
	w *watchdog
}

func (p *pausingReader) Read(b []byte) (int, error) {
	p.w.pause()
	defer p.w.resume()
	return p.r.Read(b)
}

// deadlineReader bounds each Read of a Get's reader by Idle.
type deadlineReader struct {
	rc  io.ReadCloser
	w   *watchdog
	ctx context.Context
	s   *deadlined
}

func (r *deadlineReader) Read(b []byte) (int, error) {
	r.w.resume()
	n, err := r.rc.Read(b)
	r.w.pause()
	if err != nil && !errors.Is(err, io.EOF) {
		err = r.s.classify(r.ctx, err)
	}
	return n, err
}

func (r *deadlineReader) Close() error {
	err := r.rc.Close()
	r.w.stop()
	return err
}
