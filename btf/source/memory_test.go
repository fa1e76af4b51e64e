package source

import (
	"bytes"
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/cilium/ebpf/btf"
)

// heapBudget bounds the heap while importing a Debian kernel package: the
// package (~26 MB), its data.tar (~100 MB) and the decompressed kernel
// (~53 MB) must not be held in memory.
const heapBudget = 600 << 20

func TestImportDebMemory(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) { testImportDebMemory(t, series) })
	}
}

func testImportDebMemory(t *testing.T, series string) {
	deb := testenv.DebianKernel(t, series)
	const heapObjects = "/memory/classes/heap/objects:bytes"
	samples := []metrics.Sample{{Name: heapObjects}, {Name: "/gc/heap/allocs:bytes"}}
	runtime.GC()
	metrics.Read(samples)
	before, allocsBefore := samples[0].Value.Uint64(), samples[1].Value.Uint64()

	// Sample the heap while importing. This is a memory budget, not a
	// timing: sampling often only makes the peak seen closer to the real one.
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		s := []metrics.Sample{{Name: heapObjects}}
		var peak uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	var btfSize, modules int
	err := Import(context.Background(), deb, Options{TempDir: t.TempDir()}, func(k *Kernel) error {
		btfSize, modules = len(k.BTF), len(k.Modules)
		return nil
	})
	close(stop)
	peak := <-done
	if err != nil {
		t.Fatal(err)
	}
	metrics.Read(samples)
	t.Logf("heap objects: %d MiB before, peak %d MiB during import (BTF %d bytes, %d modules); %d MiB allocated in all",
		before>>20, peak>>20, btfSize, modules, (samples[1].Value.Uint64()-allocsBefore)>>20)
	if peak > heapBudget {
		t.Errorf("heap peaked at %d MiB importing %s, budget %d MiB", peak>>20, deb, heapBudget>>20)
	}
}

func BenchmarkImportDeb(b *testing.B) {
	deb := testenv.DebianKernel(b, "6.1")
	tmp := b.TempDir()
	b.ReportAllocs()
	for b.Loop() {
		err := Import(context.Background(), deb, Options{TempDir: tmp}, func(*Kernel) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseBTF(b *testing.B) {
	raw := debKernel(b, "6.12").BTF
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := btf.LoadSpecFromReader(bytes.NewReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
}
