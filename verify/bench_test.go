package verify

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkVerify measures verification throughput: every example program
// on the Debian 6.1 and 6.12 kernels, one VM per kernel and example (both
// modes in it), with 1 and 2 VMs at once. It reports kernel × program
// verifications per minute, VMs per minute and the mean VM wall time.
func BenchmarkVerify(b *testing.B) {
	requireQemu(b)
	r := runner(b)
	var reqs []Request
	for _, series := range []string{"6.1", "6.12"} {
		k := debianKernel(b, series)
		for name, src := range examples(b) {
			a := relocate(b, name, compile(b, src), k)
			reqs = append(reqs, Request{Runner: r, Image: k.Image, Release: k.Release, Program: name,
				Object: a.Object, Relocated: a.Relocated, MinBTF: a.MinBTF, TempDir: b.TempDir()})
		}
	}
	// Probe the accelerator once, outside the measurement.
	KVMWorks(context.Background(), "x86_64", mustQemu(b), reqs[0].Image)
	for _, vms := range []int{1, 2} {
		b.Run(fmt.Sprintf("vms=%d", vms), func(b *testing.B) {
			var (
				mu       sync.Mutex
				programs int
				vmTime   time.Duration
				failures []string
			)
			start := time.Now()
			for range b.N {
				jobs := make(chan Request)
				var wg sync.WaitGroup
				for range vms {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for req := range jobs {
							rep, err := Run(context.Background(), req)
							mu.Lock()
							switch {
							case err != nil:
								failures = append(failures, err.Error())
							case rep.Result != ResultVerified:
								failures = append(failures, fmt.Sprintf("%s on %s: %s %s", req.Program, req.Release, rep.Result, rep.Reason))
							default:
								programs += len(rep.Verdicts())
								vmTime += rep.Outcome.Duration
							}
							mu.Unlock()
						}
					}()
				}
				for _, req := range reqs {
					jobs <- req
				}
				close(jobs)
				wg.Wait()
			}
			elapsed := time.Since(start)
			if len(failures) > 0 {
				b.Fatalf("failures: %v", failures)
			}
			vmsRun := b.N * len(reqs)
			b.ReportMetric(float64(programs)/elapsed.Minutes(), "verifications/min")
			b.ReportMetric(float64(vmsRun)/elapsed.Minutes(), "VMs/min")
			b.ReportMetric(vmTime.Seconds()/float64(vmsRun), "s/VM")
		})
	}
}

func mustQemu(b *testing.B) string {
	q, err := QemuFor("x86_64")
	if err != nil {
		b.Fatal(err)
	}
	return q
}
