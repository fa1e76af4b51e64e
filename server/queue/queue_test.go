package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/bpfarm/bpfarm/server/store"
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
	w := NewWaker()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); Loop(ctx, log, "job", w, claim, run) }()
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
