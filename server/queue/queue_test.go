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

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

// TestLoop: every queued job runs exactly once across workers, a worker
// sleeping on an empty queue is woken by Kick, and Loop ends with ctx.
func TestLoop(t *testing.T) {
	var (
		mu      sync.Mutex
		pending []int
		ran     = map[int]int{}
		done    = make(chan struct{})
	)
	const total = 50
	claim := func(ctx context.Context) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(pending) == 0 {
			return 0, fmt.Errorf("empty: %w", store.ErrNotFound)
		}
		j := pending[0]
		pending = pending[1:]
		return j, nil
	}
	run := func(ctx context.Context, j int) {
		mu.Lock()
		defer mu.Unlock()
		ran[j]++
		if len(ran) == total {
			close(done)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWaker(nil, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); Loop(ctx, log, "job", w, claim, run, nil) }()
	}
	// Queue after the workers found the queue empty: only Kick wakes them
	// before the poll interval.
	mu.Lock()
	for i := range total {
		pending = append(pending, i)
	}
	mu.Unlock()
	w.Kick()
	<-done
	cancel()
	wg.Wait()
	for j, n := range ran {
		if n != 1 {
			t.Errorf("job %d ran %d times", j, n)
		}
	}
}

// TestLoopPanic: a job that panics is failed with ErrInternal and the
// worker goes on with the next job.
func TestLoopPanic(t *testing.T) {
	var (
		mu      sync.Mutex
		pending = []int{1, 2, 3}
		ran     []int
		failed  = map[int]error{}
		done    = make(chan struct{})
	)
	claim := func(ctx context.Context) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(pending) == 0 {
			return 0, fmt.Errorf("empty: %w", store.ErrNotFound)
		}
		j := pending[0]
		pending = pending[1:]
		return j, nil
	}
	run := func(ctx context.Context, j int) {
		if j == 2 {
			var m map[string]int
			m["x"] = 1 // a real runtime panic
		}
		mu.Lock()
		defer mu.Unlock()
		ran = append(ran, j)
		if j == 3 {
			close(done)
		}
	}
	fail := func(ctx context.Context, j int, err error) {
		mu.Lock()
		defer mu.Unlock()
		failed[j] = err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	finished := make(chan struct{})
	go func() { defer close(finished); Loop(ctx, log, "job", NewWaker(nil, ""), claim, run, fail) }()
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
}

// TestLoopOnStore: workers looping over the store's build queue run every
// queued build exactly once, on SQLite and on PostgreSQL (where claims
// race for rows).
func TestLoopOnStore(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if _, err := db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "r1", Entry: "p.bpf.c", BundleBlob: "b",
			Size: 1, Files: 1}); err != nil {
			t.Fatal(err)
		}
		const total = 30
		for i := range total {
			if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: "r1", Arch: "x86_64",
				Flags: []string{fmt.Sprint("-DN=", i)}, CacheKey: fmt.Sprint("k", i)}); err != nil {
				t.Fatal(err)
			}
		}
		var (
			mu   sync.Mutex
			ran  = map[int64]int{}
			done = make(chan struct{})
		)
		run := func(ctx context.Context, j *store.Job) {
			if err := db.Finish(ctx, j.ID, store.Outcome{State: "succeeded", ObjectBlob: "o"}); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			ran[j.ID]++
			if len(ran) == total {
				close(done)
			}
		}
		w := NewWaker(db, store.TopicBuildQueued)
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() { defer wg.Done(); Loop(ctx, log, "build", w, db.Claim, run, nil) }()
		}
		db.Notify(ctx, store.TopicBuildQueued) // as a push in any process does
		<-done
		cancel()
		wg.Wait()
		for id, n := range ran {
			if n != 1 {
				t.Errorf("build %d ran %d times", id, n)
			}
		}
		if q, r, err := db.QueueDepth(context.Background()); err != nil || q != 0 || r != 0 {
			t.Errorf("queue after the loop: %d queued, %d running, %v", q, r, err)
		}
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}
