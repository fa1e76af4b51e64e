// Package lease runs singleton work — periodic garbage collection, the
// job sweeper — in one process at a time among every process sharing the
// database. A lease is a row naming its holder and an expiry, taken with
// one conditional upsert (store.DB.AcquireLease) and renewed while the work
// runs; a holder that dies lets it expire, and another process takes it.
// It works the same on SQLite and on PostgreSQL.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// Store keeps leases (a *store.DB).
type Store interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// ErrHeld is returned by Do when another process holds the lease.
var ErrHeld = errors.New("held by another process")

// DefaultTTL is how long a lease lasts without renewal; Do renews it every
// third of that.
const DefaultTTL = time.Minute

// holder names this process: host, pid and a random part (pids repeat
// across containers).
var holder = func() string {
	h, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", h, os.Getpid(), hex.EncodeToString(b[:]))
}()

// calls numbers holders: each Do (and each try of Every) is a holder of
// its own, so that two in one process exclude each other too.
var calls atomic.Int64

func newHolder() string { return fmt.Sprintf("%s#%d", holder, calls.Add(1)) }

// Do runs fn while holding lease name, renewing it every ttl/3, and
// releases it when fn returns. When another process holds it, Do returns
// ErrHeld (wrapped) without running fn. If a renewal finds the lease lost
// (this process stalled past ttl), fn's context is cancelled.
func Do(ctx context.Context, db Store, name string, ttl time.Duration, fn func(context.Context) error) error {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	holder := newHolder()
	ok, err := db.AcquireLease(ctx, name, holder, ttl)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("lease %s: %w", name, ErrHeld)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ok, err := db.AcquireLease(wctx, name, holder, ttl)
			if err == nil && !ok {
				cancel(fmt.Errorf("lease %s lost", name))
				return
			}
		}
	}()
	err = fn(wctx)
	close(done)
	<-renewed
	if rerr := db.ReleaseLease(context.WithoutCancel(ctx), name, holder); rerr != nil && err == nil {
		slog.Default().Warn("release lease", "lease", name, "err", rerr)
	}
	if err == nil && context.Cause(wctx) != nil && ctx.Err() == nil {
		err = context.Cause(wctx)
	}
	return err
}

// Every runs fn about once per interval across every process that calls
// Every with the same name: each process checks every min(interval, poll)
// — after waiting one interval from its start — and runs fn only when it
// can take the lease "name/period" for interval (never renewed nor
// released: every process, this one included, skips until it expires). fn runs in this process
// only; errors are fn's to log.
func Every(ctx context.Context, db Store, log *slog.Logger, name string, interval time.Duration, fn func(context.Context)) {
	if log == nil {
		log = slog.Default()
	}
	first := time.NewTimer(interval)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	tick := time.NewTicker(min(interval, poll))
	defer tick.Stop()
	for {
		// A new holder each time: the lease is never renewed, only taken
		// once it expired.
		ok, err := db.AcquireLease(ctx, name+"/period", newHolder(), interval)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("periodic "+name+": lease", "err", err)
		case ok:
			fn(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// poll is how often Every checks a lease it does not hold.
const poll = time.Minute
