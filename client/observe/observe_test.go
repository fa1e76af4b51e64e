package observe_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/client/observe"
)

// goEvent is the fixture's struct event, as a Go program would declare it.
type goEvent struct {
	Seq   uint32
	CPU   uint32
	TS    uint64
	Comm  [16]byte
	Ret   int32
	Flags uint32
}

type goKey struct {
	ID   uint32
	Name [8]byte
}

func TestEventsAndMaps(t *testing.T) {
	f := newFixture(t)
	set, err := observe.Open(f.name, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := set.Map("events")
	if err != nil {
		t.Fatal(err)
	}
	if m.Record == nil || m.Record.TypeName() != "struct event" || m.RecordOrigin != "declared" {
		t.Fatalf("events record %v %q %q", m.Record, m.RecordOrigin, m.RecordNote)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, err := set.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Close()
	f.run(t, 10)
	for i := range 10 {
		ev, err := evs.Next()
		if err != nil {
			t.Fatal(err)
		}
		v, err := ev.Value()
		if err != nil {
			t.Fatal(err)
		}
		st := v.(decode.Struct)
		if seq, _ := st.Get("seq"); seq != uint64(i) {
			t.Errorf("record %d: seq %v", i, seq)
		}
		if comm, _ := st.Get("comm"); comm != "bench" {
			t.Errorf("record %d: comm %v", i, comm)
		}
		typed, err := observe.As[goEvent](ev)
		if err != nil || typed.Seq != uint32(i) || typed.Ret != -1 {
			t.Errorf("As: %+v %v", typed, err)
		}
		js, err := ev.AppendJSON(nil)
		var back map[string]any
		if err != nil || json.Unmarshal(js, &back) != nil || back["ret"] != float64(-1) {
			t.Errorf("JSON %s %v", js, err)
		}
	}
	if evs.Count() != 10 || evs.Lost() != 0 {
		t.Errorf("count %d lost %d", evs.Count(), evs.Lost())
	}
	// A type of the wrong size is refused.
	if _, err := observe.As[goKey](&observe.Event{Map: m, Raw: make([]byte, 40)}); !errors.Is(err, decode.ErrSize) {
		t.Errorf("As with the wrong type: %v", err)
	}

	// A hash map keyed by a struct.
	counts, _ := set.Map("counts")
	entries, err := counts.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, e := range entries {
		k := e.Key.(decode.Struct)
		if name, _ := k.Get("name"); name != "key" {
			t.Errorf("key %v", k)
		}
		total += e.Value.(uint64)
	}
	if len(entries) != 4 || total != 10 {
		t.Errorf("counts: %d entries, total %d", len(entries), total)
	}
	typed, err := observe.EntriesAs[goKey, uint64](counts)
	if err != nil || len(typed) != 4 || typed[goKey{ID: 1, Name: [8]byte{'k', 'e', 'y'}}] != 3 {
		t.Errorf("EntriesAs: %v %v", typed, err)
	}

	// A per-CPU histogram: summed over the CPUs.
	lat, _ := set.Map("lat")
	entries, err = lat.Entries()
	if err != nil || len(entries) != 1 {
		t.Fatalf("lat: %v %v", entries, err)
	}
	h, ok := observe.Histogram(entries[0].Value)
	if !ok || h.Total() != 10 || len(entries[0].PerCPU) == 0 {
		t.Errorf("lat: %+v", entries[0])
	}

	// Globals.
	bss, err := set.Map(".bss")
	if err != nil {
		t.Fatal(err)
	}
	entries, err = bss.Entries()
	if err != nil || len(entries) != 1 {
		t.Fatalf(".bss: %v %v", entries, err)
	}
	if seq, _ := entries[0].Value.(decode.Struct).Get("seq"); seq != uint64(10) {
		t.Errorf(".bss seq = %v", seq)
	}

	// Refusals.
	if _, err := set.Events(ctx, "counts"); !errors.Is(err, observe.ErrNoOutputs) {
		t.Errorf("events on a hash map: %v", err)
	}
	if _, err := set.Map("nope"); !errors.Is(err, observe.ErrUnknownMap) {
		t.Errorf("unknown map: %v", err)
	}
	if err := os.Remove(counts.Pinned); err != nil {
		t.Fatal(err)
	}
	if _, err := counts.Entries(); !errors.Is(err, observe.ErrNotPinned) {
		t.Errorf("unpinned map: %v", err)
	}
	if _, err := observe.Open("not-loaded", loader.Options{StateDir: filepath.Dir(f.opt.StateDir)}); !errors.Is(err, loader.ErrNotLoaded) {
		t.Errorf("not loaded: %v", err)
	}
}

// Events ends when its context does.
func TestEventsContext(t *testing.T) {
	f := newFixture(t)
	set, err := observe.Open(f.name, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	evs, err := set.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Close()
	done := make(chan error, 1)
	go func() {
		_, err := evs.Next()
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Next after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Next did not return after cancel")
	}
}

// TestEventsLostSamples overflows a perf event array: a burst of records
// on one CPU, written while nobody reads, fills the reader's buffer and
// the kernel drops the rest. Once the reader has made room, the next
// record written brings the kernel's count of lost samples: Next returns
// it as a notice (Lost, no Raw), Lost adds it up, and the records around
// it decode in order.
func TestEventsLostSamples(t *testing.T) {
	f := newFixtureOf(t, "observe-perf-fixture", perfFixtureSrc)
	set, err := observe.Open(f.name, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	evs, err := set.Events(ctx, "pevents")
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Close()

	// All on one CPU: one perf buffer, the one the lost count is kept in.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpus, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	for c := 0; c < 1024; c++ {
		if cpus.IsSet(c) {
			one.Set(c)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &cpus)

	// A record takes 56 bytes of the buffer (header, size, 40 bytes of
	// data, padding): a quarter of this burst fits in PerfBufferSize.
	const burst = 4 * observe.PerfBufferSize / 56
	f.run(t, burst)

	var records, lost, lostNotices uint64
	next := func() *observe.Event {
		t.Helper()
		ev, err := evs.Next()
		if err != nil {
			t.Fatalf("after %d records and %d lost: %v", records, lost, err)
		}
		if ev.Lost > 0 {
			if len(ev.Raw) != 0 || ev.CPU < 0 {
				t.Fatalf("lost notice %+v", ev)
			}
			lost += ev.Lost
			lostNotices++
			return ev
		}
		records++
		v, err := ev.Value()
		if err != nil {
			t.Fatal(err)
		}
		st := v.(decode.Struct)
		if comm, _ := st.Get("comm"); comm != "perf" {
			t.Fatalf("record %d: %v", records, st)
		}
		js, err := ev.AppendJSON(nil)
		if err != nil || !json.Valid(js) {
			t.Fatalf("record %d: JSON %s %v", records, js, err)
		}
		return ev
	}
	seqOf := func(ev *observe.Event) uint64 {
		v, _ := ev.Value()
		seq, _ := v.(decode.Struct).Get("seq")
		return seq.(uint64)
	}

	// Make room: the first records of the burst, in order.
	for i := range uint64(1000) {
		if ev := next(); ev.Lost > 0 || seqOf(ev) != i {
			t.Fatalf("record %d of the burst: lost %d, seq %v", i, ev.Lost, ev.Raw)
		}
	}
	// One more record: the kernel writes the lost count before it.
	f.run(t, 1)
	for {
		ev := next()
		if ev.Lost > 0 {
			continue
		}
		seq := seqOf(ev)
		if seq == burst {
			break
		}
		if lost > 0 || seq != records-1 {
			t.Fatalf("record %d: seq %d (lost so far %d)", records, seq, lost)
		}
	}
	if lost == 0 || lostNotices == 0 || records+lost != burst+1 {
		t.Fatalf("%d records and %d lost (%d notices), want %d in all with some lost", records, lost, lostNotices, burst+1)
	}
	if evs.Lost() != lost || evs.Count() != records {
		t.Errorf("Lost %d, Count %d; want %d, %d", evs.Lost(), evs.Count(), lost, records)
	}
	t.Logf("%d records, %d lost", records, lost)
}
