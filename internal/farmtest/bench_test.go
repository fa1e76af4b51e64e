//go:build linux

package farmtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/farmtest"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// Scale figures of a replica set (make bench → BENCHMARKS.md). Every
// farm runs on a real PostgreSQL and a real MinIO bucket, on this
// machine: its cores are shared by every process of the farm, the
// database, the object store and the load generator, which the report
// says next to the figures.

// benchFarm starts a replica set of apis and workers on a fresh
// PostgreSQL database and MinIO bucket.
func benchFarm(b *testing.B, apis, workers int, cfg farmtest.Config) *farmtest.Farm {
	b.Helper()
	cfg.APIs, cfg.Workers = apis, workers
	cfg.Database = testenv.Postgres(b)
	cfg.S3 = testenv.MinIO(b)
	cfg.Args = append(cfg.Args, "--log-level", "warn")
	return farmtest.Start(b, cfg)
}

// benchBuilds is the number of builds timed per run of BenchmarkFarmBuilds.
const benchBuilds = 16

// BenchmarkFarmBuilds measures builds per minute with 1 and with 2 worker
// processes (one build at a time each, --workers 1), behind one API
// process: 16 pushes of a real program (execsnoop), each with its own
// -D flag so that every one is a real compile (no cache hit), all queued
// at once; timed from the first push to the last build done. Each worker
// first builds once untimed, so that every one has its precompiled
// vmlinux.h.
func BenchmarkFarmBuilds(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			f := benchFarm(b, 1, workers, farmtest.Config{WorkerArgs: []string{"--workers", "1", "--relocators", "1"}})
			ctx := context.Background()
			c := f.ClientAll()
			src := filepath.Join(repoRoot(b), "examples", "execsnoop")
			push := func(tag string) int64 {
				bundle, err := bpfsrc.Collect(src, "", bpfsrc.DefaultLimits)
				if err != nil {
					b.Fatal(err)
				}
				res, err := c.Push(ctx, "execsnoop", bundle, client.PushOptions{Flags: []string{"-DFARMTEST_BENCH=" + tag}})
				if err != nil {
					b.Fatal(err)
				}
				return res.Builds[0].ID
			}
			wait := func(ids []int64) {
				for _, id := range ids {
					bd, err := c.WaitBuild(ctx, id, nil)
					if err != nil {
						b.Fatal(err)
					}
					if bd.State != api.StateSucceeded {
						b.Fatalf("build %d: %s: %s", id, bd.State, bd.Error)
					}
				}
			}
			// Warm-up: until every worker has built once.
			for i := 0; ; i++ {
				var ids []int64
				for range workers {
					ids = append(ids, push(fmt.Sprintf("warm%d", i*workers+len(ids))))
				}
				wait(ids)
				cold := 0
				for _, w := range f.Workers() {
					m, err := w.Metrics()
					if err != nil {
						b.Fatal(err)
					}
					if m[`bpfarm_builds_total{result="succeeded"}`] == 0 {
						cold++
					}
				}
				if cold == 0 {
					break
				}
				if i > 10 {
					b.Fatalf("%d workers never got a build", cold)
				}
			}
			run := 0
			var per time.Duration
			for b.Loop() {
				start := time.Now()
				var ids []int64
				for i := range benchBuilds {
					ids = append(ids, push(fmt.Sprintf("run%d-%d", run, i)))
				}
				wait(ids)
				per = time.Since(start)
				run++
			}
			b.ReportMetric(float64(benchBuilds)/per.Minutes(), "builds/min")
			b.ReportMetric(float64(runtime.NumCPU()), "cores")
			b.ReportMetric(loadAverage(), "load-average")
		})
	}
}

// BenchmarkFarmResolve measures artifact resolves per second
// (GET /api/v1/programs/P/artifact?kernel=K, what every agent asks)
// through 1 API replica and through 2, with 32 concurrent clients spread
// over the replicas, for 5 seconds each, on the same farm in the same
// run.
func BenchmarkFarmResolve(b *testing.B) {
	f := benchFarm(b, 2, 1, farmtest.Config{})
	btf, arch := hostBTF(b)
	kid := fmt.Sprintf("farmtest/1/%s/6.0.0-farmtest", arch)
	ctx := context.Background()
	c := f.ClientAll()
	for _, args := range [][]string{{"kernels", "import", btf, "--id", kid},
		{"push", filepath.Join(repoRoot(b), "examples", "execsnoop"), "--wait"}} {
		if r := f.CLI(ctx, args...); r.Code != 0 {
			b.Fatalf("%v: %s", args, r.Stderr)
		}
	}
	if _, err := c.Resolve(ctx, "execsnoop", kid, "", time.Minute); err != nil {
		b.Fatal(err)
	}
	const (
		clients = 32
		window  = 5 * time.Second
	)
	measure := func(procs []*farmtest.Proc) float64 {
		tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		var n, errs atomic.Int64
		stop := time.Now().Add(window)
		var wg sync.WaitGroup
		for i := range clients {
			p := procs[i%len(procs)]
			url := p.URL + "/api/v1/programs/execsnoop/artifact?kernel=" + kid
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.Header.Set("Authorization", "Bearer "+f.Admin)
					resp, err := hc.Do(req)
					if err != nil {
						errs.Add(1)
						continue
					}
					drain(resp)
					if resp.StatusCode != http.StatusOK {
						errs.Add(1)
						continue
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		if errs.Load() > 0 {
			b.Fatalf("%d resolves failed", errs.Load())
		}
		return float64(n.Load()) / window.Seconds()
	}
	var one, two float64
	for b.Loop() {
		measure(f.APIs()) // warm-up: connections, caches
		one = measure(f.APIs()[:1])
		two = measure(f.APIs())
	}
	b.ReportMetric(one, "resolves/s-1-replica")
	b.ReportMetric(two, "resolves/s-2-replicas")
	b.ReportMetric(two/one, "x-2-replicas")
	b.ReportMetric(loadAverage(), "load-average")
}

// pollAgents is the number of simulated agents of BenchmarkFarmLongPoll.
const pollAgents = 5000

// BenchmarkFarmLongPoll simulates 5,000 agents, each enrolled and
// registered with its own host token, long-polling their desired state
// across 2 API replicas (half on each). It measures the replicas' RSS and
// goroutines idle and with every poll held, the RSS per held poll, and
// the time from an assignment change (made through one replica) until
// every poller, on both replicas, has the new desired state.
func BenchmarkFarmLongPoll(b *testing.B) {
	f := benchFarm(b, 2, 1, farmtest.Config{})
	ctx := context.Background()
	apis := f.APIs()
	if r := f.CLI(ctx, "push", filepath.Join(repoRoot(b), "examples", "schedcount"), "--wait"); r.Code != 0 {
		b.Fatalf("push: %s", r.Stderr)
	}
	type agent struct {
		name string
		c    *client.Client
	}
	agents := make([]agent, pollAgents)
	var admins []*client.Client
	for _, p := range apis {
		admins = append(admins, f.Client(p))
	}
	setup := time.Now()
	errs := parallel(16, pollAgents, func(i int) error {
		name := fmt.Sprintf("sim-%05d", i)
		tok, err := admins[i%len(admins)].EnrollHost(ctx, name, map[string]string{"fleet": "sim"})
		if err != nil {
			return err
		}
		c, err := client.New(apis[i%len(apis)].URL, tok.Secret)
		if err != nil {
			return err
		}
		if _, err := c.Register(ctx, api.HostRegistration{Name: name, Kernel: "debian/12/x86_64/6.1.0-57-cloud-amd64",
			Labels: map[string]string{"fleet": "sim"}, AgentVersion: "farmtest"}); err != nil {
			return err
		}
		agents[i] = agent{name: name, c: c}
		return nil
	})
	if errs != nil {
		b.Fatal(errs)
	}
	b.Logf("%d agents enrolled and registered in %s", pollAgents, time.Since(setup).Round(time.Millisecond))

	sample := func() (rss int64, goroutines float64) {
		for _, p := range apis {
			r, err := p.RSS()
			if err != nil {
				b.Fatal(err)
			}
			m, err := p.Metrics()
			if err != nil {
				b.Fatal(err)
			}
			rss += r
			goroutines += m["go_goroutines"]
		}
		return rss, goroutines
	}
	waiting := func() float64 {
		var n float64
		for _, p := range apis {
			m, err := p.Metrics()
			if err != nil {
				b.Fatal(err)
			}
			n += m["bpfarm_desired_polls_waiting"]
		}
		return n
	}

	var (
		idleRSS, heldRSS    int64
		idleGor, heldGor    float64
		propagation, median time.Duration
	)
	for b.Loop() {
		// Every agent's current version, then its long poll.
		versions := make([]uint64, pollAgents)
		if err := parallel(16, pollAgents, func(i int) error {
			ds, err := agents[i].c.Desired(ctx, agents[i].name, 0, 0)
			if err == nil {
				versions[i] = ds.Version
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		time.Sleep(2 * time.Second) // let the setup's garbage go
		idleRSS, idleGor = sample()

		got := make([]time.Time, pollAgents)
		var wg sync.WaitGroup
		var failed atomic.Int64
		pctx, cancel := context.WithCancel(ctx)
		for i := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for pctx.Err() == nil {
					ds, err := agents[i].c.Desired(pctx, agents[i].name, versions[i], 2*time.Minute)
					if err != nil {
						if pctx.Err() == nil {
							failed.Add(1)
						}
						return
					}
					if ds.Version != versions[i] {
						got[i] = time.Now()
						return
					}
				}
			}()
		}
		for deadline := time.Now().Add(2 * time.Minute); waiting() < pollAgents; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) || failed.Load() > 0 {
				cancel()
				b.Fatalf("%v of %d polls held, %d failed", waiting(), pollAgents, failed.Load())
			}
		}
		time.Sleep(2 * time.Second) // settled
		heldRSS, heldGor = sample()

		// The change: one more assignment for every simulated agent,
		// made through the first replica.
		start := time.Now()
		if _, err := admins[0].Assign(ctx, api.AssignmentRequest{Program: "schedcount",
			Selector: map[string]string{"fleet": "sim"}}); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			cancel()
			<-done
		}
		cancel()
		if failed.Load() > 0 {
			b.Fatalf("%d polls failed", failed.Load())
		}
		var lat []time.Duration
		for i, t := range got {
			if t.IsZero() {
				b.Fatalf("agent %s never saw the change", agents[i].name)
			}
			lat = append(lat, t.Sub(start))
		}
		slices.Sort(lat)
		propagation, median = lat[len(lat)-1], lat[len(lat)/2]
	}
	perPoll := float64(heldRSS-idleRSS) / pollAgents
	b.Logf("%d polls held over 2 replicas: RSS %.1f MB idle, %.1f MB held (%.1f KB per poll); goroutines %.0f idle, %.0f held; assignment change seen by all in %s (median %s)",
		pollAgents, float64(idleRSS)/(1<<20), float64(heldRSS)/(1<<20), perPoll/1024, idleGor, heldGor,
		propagation.Round(time.Millisecond), median.Round(time.Millisecond))
	b.ReportMetric(pollAgents, "pollers")
	b.ReportMetric(float64(idleRSS)/(1<<20), "idle-rss-MB")
	b.ReportMetric(float64(heldRSS)/(1<<20), "held-rss-MB")
	b.ReportMetric(perPoll/1024, "rss-KB/poll")
	b.ReportMetric(heldGor, "held-goroutines")
	b.ReportMetric((heldGor-idleGor)/pollAgents, "goroutines/poll")
	b.ReportMetric(float64(propagation.Milliseconds()), "all-see-change-ms")
	b.ReportMetric(float64(median.Milliseconds()), "median-see-change-ms")
	b.ReportMetric(loadAverage(), "load-average")
}

// loadAverage returns the machine's load average over the last minute:
// the figures are only comparable between runs on equally loaded
// machines, so the report shows it next to them.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

// drain reads the rest of an answer and closes it, so that its
// connection is used again.
func drain(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// parallel runs fn(0..n-1) on k goroutines and returns the first error.
func parallel(k, n int, fn func(i int) error) error {
	var (
		next     atomic.Int64
		firstErr error
		once     sync.Once
		wg       sync.WaitGroup
	)
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
