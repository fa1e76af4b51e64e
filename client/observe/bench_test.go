package observe_test

import (
	"context"
	"io"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/client/observe"
)

// batch is how many records the fixture writes into the ring buffer (16
// MiB, 48 bytes a record) before each drain.
const batch = 100_000

// BenchmarkEvents drains the same ring buffer, filled by the same program,
// two ways, batch after batch in the same loop on one locked OS thread:
// raw (cilium/ebpf's ringbuf.Reader.ReadInto, the bytes only) and decoded
// to JSON lines through this package (Events.Next + Event.AppendJSON,
// written to io.Discard). One op is one record of each. The time is the
// thread's CPU time, so that other load on the machine does not count:
// raw-ns/event, json-ns/event, json-events/s (on one core) and their ratio.
func BenchmarkEvents(b *testing.B) {
	f := newFixture(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	set, err := observe.Open(f.name, f.opt)
	if err != nil {
		b.Fatal(err)
	}
	m, _ := set.Map("events")
	em, err := ebpf.LoadPinnedMap(m.Pinned, nil)
	if err != nil {
		b.Fatal(err)
	}
	rd, err := ringbuf.NewReader(em)
	em.Close()
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	var rec ringbuf.Record
	raw := func() {
		if err := rd.ReadInto(&rec); err != nil {
			b.Fatal(err)
		}
		io.Discard.Write(rec.RawSample)
	}

	// A second reader of the same ring buffer, through this package: each
	// fill is drained by one of them, the other sees nothing new.
	evs, err := set.Events(context.Background(), "events")
	if err != nil {
		b.Fatal(err)
	}
	defer evs.Close()
	buf := make([]byte, 0, 4096)
	decoded := func() {
		ev, err := evs.Next()
		if err != nil {
			b.Fatal(err)
		}
		if buf, err = ev.AppendJSON(buf[:0]); err != nil {
			b.Fatal(err)
		}
		buf = append(buf, '\n')
		io.Discard.Write(buf)
	}

	b.ReportAllocs()
	var rawNS, jsonNS int64
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		rawNS += drain(b, f, rd, n, raw)
		jsonNS += drainEvents(b, f, rd, n, decoded)
		done += n
	}
	b.ReportMetric(float64(rawNS)/float64(b.N), "raw-ns/event")
	b.ReportMetric(float64(jsonNS)/float64(b.N), "json-ns/event")
	b.ReportMetric(1e9*float64(b.N)/float64(jsonNS), "json-events/s")
	b.ReportMetric(float64(jsonNS)/float64(rawNS), "json/raw")
}

// threadCPU returns the calling thread's CPU time.
func threadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return ts.Nano()
}

// drain fills the ring buffer with n records and reads them with read,
// returning the CPU time the reads took.
func drain(b *testing.B, f *fixture, _ *ringbuf.Reader, n int, read func()) int64 {
	b.StopTimer()
	f.run(b, n)
	b.StartTimer()
	start := threadCPU(b)
	for range n {
		read()
	}
	return threadCPU(b) - start
}

// drainEvents is drain for the package's reader: both readers share the
// ring buffer's consumer position, which the raw reader has caught up with.
func drainEvents(b *testing.B, f *fixture, rd *ringbuf.Reader, n int, read func()) int64 {
	return drain(b, f, rd, n, read)
}
