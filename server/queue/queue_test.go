package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

// fill queues n builds in db.
func fill(t *testing.T, db *store.DB, n int) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "r", Entry: "p.bpf.c", BundleBlob: "b",
		Size: 1, Files: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		f := fmt.Sprint(i)
		if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: "r", Arch: "x86_64",
			Flags: []string{f}, CacheKey: f}); err != nil {
			t.Fatal(err)
		}
	}
}

// openQueue returns a SQLite store holding n queued builds.
func openQueue(t *testing.T, n int) *store.DB {
	t.Helper()
	db := storetest.Open(t, "sqlite")
	fill(t, db, n)
	return db
}

// builds returns a Worker of db's builds that runs jobs with run.
func builds(db *store.DB, owner string, p Policy, wake *Waker, log *slog.Logger, run func(context.Context, *store.Job)) *Worker[*store.Job] {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Worker[*store.Job]{Name: "build", Queue: store.QueueBuilds, DB: db, Owner: owner, Policy: p, Log: log,
		Wake: wake, Claim: db.Claim, Run: run,
		Lease:   func(j *store.Job) store.Lease { return j.Lease },
		Expired: func(j *store.Job) bool { return j.Expired },
	}
}

// TestLoop: every queued job runs exactly once across workers (on
// PostgreSQL, claims race for rows), a worker sleeping on an empty queue
// is woken by a store.DB.Notify of its topic (as a push in any process
// does), and Loop ends with ctx.
func TestLoop(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const total = 30
		fill(t, db, 0)
		var (
			mu   sync.Mutex
			ran  = map[int64]int{}
			done = make(chan struct{})
		)
		run := func(ctx context.Context, j *store.Job) {
			if _, err := db.Finish(ctx, j.Lease, store.Outcome{State: api.StateSucceeded}); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			ran[j.ID]++
			if len(ran) == total {
				close(done)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		w := NewWaker(nil, "")
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() { defer wg.Done(); builds(db, Owner("build", i), Policy{}, w, nil, run).Loop(ctx) }()
		}
		// Queue after the workers found the queue empty: only the Notify wakes them
		// before the poll interval.
		time.Sleep(50 * time.Millisecond)
		for i := range total {
			f := fmt.Sprint(i)
			if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: "r", Arch: "x86_64", Flags: []string{f},
				CacheKey: f}); err != nil {
				t.Fatal(err)
			}
		}
		db.Notify(ctx, store.TopicBuildQueued)
		<-done
		cancel()
		wg.Wait()
		for j, n := range ran {
			if n != 1 {
				t.Errorf("job %d ran %d times", j, n)
			}
		}
		if q, r, err := db.QueueDepth(context.Background()); err != nil || q != 0 || r != 0 {
			t.Errorf("queue after the loop: %d queued, %d running, %v", q, r, err)
		}
	})
}

// TestHeartbeat: a job that runs for several lease lifetimes keeps its
// lease (another worker never takes it over), and a worker that loses its
// lease sees its job's context end with ErrLeaseLost.
func TestHeartbeat(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		fill(t, db, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := Policy{TTL: 300 * time.Millisecond}
		finished := make(chan error, 1)
		running := make(chan struct{})
		long := builds(db, "long", p, NewWaker(nil, ""), nil, func(ctx context.Context, j *store.Job) {
			close(running)
			select {
			case <-time.After(4 * p.TTL):
			case <-ctx.Done():
				finished <- context.Cause(ctx)
				return
			}
			_, err := db.Finish(ctx, j.Lease, store.Outcome{State: api.StateSucceeded})
			finished <- err
		})
		go long.Loop(ctx)
		<-running
		// Another worker keeps trying to claim meanwhile.
		stolen := make(chan int64, 1)
		thief := builds(db, "thief", p, NewWaker(nil, ""), nil, func(ctx context.Context, j *store.Job) { stolen <- j.ID })
		deadline := time.Now().Add(4 * p.TTL)
		for time.Now().Before(deadline) {
			if j, err := db.Claim(ctx, store.ClaimOptions{Owner: thief.Owner, TTL: p.TTL, MaxAttempts: 5}); err == nil {
				t.Fatalf("build %d claimed by another worker while its lease was renewed", j.ID)
			}
			time.Sleep(p.TTL / 4)
		}
		if err := <-finished; err != nil {
			t.Fatalf("finish after 4 lease lifetimes: %v", err)
		}

		// A lease taken over: the heartbeat's renewal fails and the job's
		// context ends with ErrLeaseLost.
		db2 := openQueue(t, 1)
		lost := make(chan error, 1)
		started := make(chan *store.Job, 1)
		victim := builds(db2, "victim", p, NewWaker(nil, ""), nil, func(ctx context.Context, j *store.Job) {
			started <- j
			<-ctx.Done()
			lost <- context.Cause(ctx)
		})
		go victim.Loop(ctx)
		j := <-started
		// The job is queued again meanwhile (a stand-in for a lease that ran
		// out and another worker's claim).
		if err := db2.Release(ctx, j.Lease); err != nil {
			t.Fatal(err)
		}
		if err := <-lost; !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("cause: %v", err)
		}
	})
}

// TestFail: an infrastructure failure goes back to the queue with backoff
// until the attempts run out.
func TestFail(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		fill(t, db, 1)
		p := Policy{MaxAttempts: 2, Backoff: time.Nanosecond}
		w := builds(db, "w", p, NewWaker(nil, ""), nil, nil)
		w.Policy = w.Policy.Defaults()
		opts := store.ClaimOptions{Owner: "w", TTL: time.Minute, MaxAttempts: 2}
		j, err := db.Claim(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := w.Fail(ctx, j.Lease, j.Attempts, errors.New("object storage unreachable")); !ok || err != nil {
			t.Fatalf("first failure: retried %v, %v", ok, err)
		}
		time.Sleep(time.Millisecond) // past the 1ns backoff at the store's millisecond resolution
		if j, err = db.Claim(ctx, opts); err != nil || j.Attempts != 2 {
			t.Fatalf("claim after the backoff: %+v %v", j, err)
		}
		if ok, err := w.Fail(ctx, j.Lease, j.Attempts, errors.New("object storage unreachable")); ok || err != nil {
			t.Fatalf("last attempt: retried %v, %v", ok, err)
		}
		if got := GiveUpReason(2, errors.New("x")); got != "gave up after 2 attempts: x" {
			t.Errorf("reason %q", got)
		}
	})
}

func TestPolicyRetry(t *testing.T) {
	p := Policy{MaxAttempts: 10, Backoff: time.Second, MaxBackoff: 5 * time.Second}
	var last time.Duration
	for a := 1; a < 10; a++ {
		at, ok := p.Retry(a)
		d := time.Until(at).Round(time.Second)
		if !ok || d < last || d > 5*time.Second {
			t.Fatalf("attempt %d: retry in %v (ok %v) after %v", a, d, ok, last)
		}
		last = d
	}
	if last != 5*time.Second {
		t.Errorf("backoff capped at %v", last)
	}
	if _, ok := p.Retry(10); ok {
		t.Error("retried past MaxAttempts")
	}
}

// TestLoopPanic: a job that panics is handed to Panicked with ErrInternal
// and the worker goes on with the next job.
func TestLoopPanic(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		fill(t, db, 3)
		var (
			mu     sync.Mutex
			ran    []int64
			failed = map[int64]error{}
			done   = make(chan struct{})
		)
		run := func(ctx context.Context, j *store.Job) {
			if j.ID == 2 {
				var m map[string]int
				m["x"] = 1 // a real runtime panic
			}
			db.Finish(ctx, j.Lease, store.Outcome{State: api.StateSucceeded})
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, j.ID)
			if j.ID == 3 {
				close(done)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var logs strings.Builder
		w := builds(db, "w", Policy{}, NewWaker(nil, ""), slog.New(slog.NewTextHandler(&logs, nil)), run)
		w.Panicked = func(ctx context.Context, j *store.Job, err error) {
			db.Finish(ctx, j.Lease, store.Outcome{State: api.StateFailed, ErrorKind: store.ErrorKindInfra, Error: err.Error()})
			mu.Lock()
			defer mu.Unlock()
			failed[j.ID] = err
		}
		finished := make(chan struct{})
		go func() { defer close(finished); w.Loop(ctx) }()
		<-done
		cancel()
		<-finished
		if len(ran) != 2 || ran[0] != 1 || ran[1] != 3 {
			t.Fatalf("ran %v, want [1 3]", ran)
		}
		if len(failed) != 1 || !errors.Is(failed[2], ErrInternal) || failed[2].Error() != "internal error" {
			t.Fatalf("failed: %v", failed)
		}
		if !strings.Contains(logs.String(), "assignment to entry in nil map") || !strings.Contains(logs.String(), "queue_test.go") {
			t.Fatalf("the log lacks the panic and its stack:\n%s", logs.String())
		}
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}
