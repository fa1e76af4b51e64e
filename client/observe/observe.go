// Package observe reads what a loaded program set produces, decoded with
// the BTF the set carries (loader.Loaded.BTF): the records its programs
// write into ring buffers and perf event arrays, and the entries of its
// maps, including the .rodata, .data and .bss globals.
//
// It works from the set's pins and state file, so any process can observe a
// set that bpfarm-agent (or package loader) loaded:
//
//	set, err := observe.Open("execsnoop", loader.Options{})
//	events, err := set.Events()
//	for {
//		ev, err := events.Next(ctx)
//		v, err := ev.Value() // or observe.As[MyEvent](ev)
//	}
package observe

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/bpfarm/bpfarm/client/loader"
)

// ErrNotPinned is returned (wrapped in a *NotPinnedError) for a map whose
// pin is gone.
var ErrNotPinned = errors.New("map is not pinned")

// NotPinnedError reports a map of a set that is not (or no longer) pinned.
type NotPinnedError struct {
	Set, Map, Path string
	Err            error
}

func (e *NotPinnedError) Error() string {
	return fmt.Sprintf("map %s of %s is not pinned at %s (was the set unloaded? load it again): %v", e.Map, e.Set, e.Path, e.Err)
}

// Is makes errors.Is(err, ErrNotPinned) hold.
func (e *NotPinnedError) Is(target error) bool { return target == ErrNotPinned }

// Unwrap returns the error opening the pin.
func (e *NotPinnedError) Unwrap() error { return e.Err }

// ErrNoOutputs is returned by Events for a set without ring buffers or
// perf event arrays.
var ErrNoOutputs = errors.New("no ring buffers or perf event arrays")

// ErrUnknownMap is returned (wrapped) for a map name the set does not have.
var ErrUnknownMap = errors.New("no such map")

// Set is a loaded program set, opened for reading.
type Set struct {
	// Name and Revision name the set.
	Name, Revision string
	// Maps are the set's maps, in the state's order (by name).
	Maps []*Map
}

// Map is one map of a Set, with decoders for what it holds.
type Map struct {
	// Name is the map's name (".rodata", ".bss", ... for globals).
	Name string
	// Type is the map's type.
	Type ebpf.MapType
	// Pinned is the map's pin.
	Pinned string
	// Key and Value decode the map's keys and values (nil when the set
	// carries no type for them, or for ring buffers and perf arrays).
	Key, Value *decode.Decoder
	// Record decodes the records of a ring buffer or perf event array
	// (nil when their type is unknown: RecordNote says why).
	Record *decode.Decoder
	// RecordOrigin is "declared" or "inferred" when Record is set;
	// RecordNote how it was found or why not.
	RecordOrigin, RecordNote string

	set string
}

// Output reports whether m is a ring buffer or perf event array.
func (m *Map) Output() bool {
	return m.Type == ebpf.RingBuf || m.Type == ebpf.PerfEventArray
}

// PerCPU reports whether m holds one value per CPU.
func (m *Map) PerCPU() bool {
	switch m.Type {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return true
	}
	return false
}

// open opens m's pin.
func (m *Map) open(readOnly bool) (*ebpf.Map, error) {
	em, err := ebpf.LoadPinnedMap(m.Pinned, &ebpf.LoadPinOptions{ReadOnly: readOnly})
	if err != nil {
		return nil, &NotPinnedError{Set: m.set, Map: m.Name, Path: m.Pinned, Err: err}
	}
	return em, nil
}

// Open opens the loaded set name, from its state file in opt.StateDir
// (loader.ErrNotLoaded if there is none). Maps are opened from their pins
// when read.
func Open(name string, opt loader.Options) (*Set, error) {
	l, err := loader.State(name, opt)
	if err != nil {
		return nil, fmt.Errorf("observe: %w", err)
	}
	return FromLoaded(l)
}

// FromLoaded returns the Set described by l.
func FromLoaded(l *loader.Loaded) (*Set, error) {
	s := &Set{Name: l.Name, Revision: l.Revision}
	var types *btf.Spec
	if len(l.BTF) > 0 {
		var err error
		if types, err = btf.LoadSpecFromReader(bytes.NewReader(l.BTF)); err != nil {
			return nil, fmt.Errorf("observe %s: the state's BTF: %w", l.Name, err)
		}
	}
	decoder := func(id uint32) (*decode.Decoder, error) {
		if id == 0 || types == nil {
			return nil, nil
		}
		t, err := types.TypeByID(btf.TypeID(id))
		if err != nil {
			return nil, err
		}
		return decode.New(t)
	}
	for _, ms := range l.Maps {
		m := &Map{Name: ms.Name, Pinned: ms.Pinned, RecordOrigin: ms.RecordOrigin, RecordNote: ms.RecordNote, set: l.Name}
		m.Type = mapType(ms.Type)
		var err error
		if m.Key, err = decoder(ms.KeyTypeID); err != nil {
			return nil, fmt.Errorf("observe %s: map %s: key type: %w", l.Name, ms.Name, err)
		}
		if m.Value, err = decoder(ms.ValueTypeID); err != nil {
			return nil, fmt.Errorf("observe %s: map %s: value type: %w", l.Name, ms.Name, err)
		}
		if m.Record, err = decoder(ms.RecordTypeID); err != nil {
			return nil, fmt.Errorf("observe %s: map %s: record type: %w", l.Name, ms.Name, err)
		}
		if m.Output() && m.Record == nil && m.RecordNote == "" {
			m.RecordNote = "the set carries no record types (loaded by an older agent?)"
		}
		s.Maps = append(s.Maps, m)
	}
	return s, nil
}

// mapType parses a map type as cilium/ebpf names it ("RingBuf").
func mapType(name string) ebpf.MapType {
	for t := ebpf.UnspecifiedMap; t <= ebpf.Arena; t++ {
		if t.String() == name {
			return t
		}
	}
	return ebpf.UnspecifiedMap
}

// Map returns the map called name.
func (s *Set) Map(name string) (*Map, error) {
	for _, m := range s.Maps {
		if m.Name == name {
			return m, nil
		}
	}
	names := make([]string, 0, len(s.Maps))
	for _, m := range s.Maps {
		names = append(names, m.Name)
	}
	return nil, fmt.Errorf("%w %s in %s: it has %s", ErrUnknownMap, name, s.Name, listOrNone(names))
}

// Outputs returns the set's ring buffers and perf event arrays.
func (s *Set) Outputs() []*Map {
	var out []*Map
	for _, m := range s.Maps {
		if m.Output() {
			out = append(out, m)
		}
	}
	return out
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
