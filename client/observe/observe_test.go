package observe_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

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
