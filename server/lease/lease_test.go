package lease_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/lease"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}

// Two runners (two processes, or two in one) never hold one lease at once.
func TestDoExcludes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		inside := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error)
		go func() {
			done <- lease.Do(ctx, db, "gc", time.Minute, func(context.Context) error {
				close(inside)
				<-release
				return nil
			})
		}()
		<-inside
		ran := false
		err := lease.Do(ctx, db, "gc", time.Minute, func(context.Context) error { ran = true; return nil })
		if !errors.Is(err, lease.ErrHeld) || ran {
			t.Fatalf("second runner while the first holds the lease: ran=%v err=%v", ran, err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Released: the next one runs, and fn's error comes back.
		boom := errors.New("boom")
		if err := lease.Do(ctx, db, "gc", time.Minute, func(context.Context) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("after release: %v", err)
		}
	})
}

// A holder that died (its lease expired) does not block the others.
func TestDoTakesExpired(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if ok, err := db.AcquireLease(ctx, "gc", "dead process", -time.Second); err != nil || !ok {
			t.Fatal(ok, err)
		}
		ran := false
		if err := lease.Do(ctx, db, "gc", time.Minute, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("expired lease: ran=%v err=%v", ran, err)
		}
	})
}

// Do keeps renewing while fn runs longer than the lease lasts.
func TestDoRenews(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ttl := 1500 * time.Millisecond
		err := lease.Do(ctx, db, "gc", ttl, func(ctx context.Context) error {
			for range 4 {
				time.Sleep(ttl / 2)
				if ok, err := db.AcquireLease(ctx, "gc", "intruder", ttl); err != nil || ok {
					t.Errorf("intruder took a renewed lease: %v %v", ok, err)
				}
			}
			return ctx.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestEvery(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		var runs atomic.Int32
		ran := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lease.Every(ctx, db, nil, "gc", 10*time.Millisecond, func(context.Context) {
				runs.Add(1)
				select {
				case ran <- struct{}{}:
				default:
				}
			})
		}()
		<-ran
		cancel()
		<-done
		if runs.Load() < 1 {
			t.Fatal("Every never ran")
		}
	})
}
