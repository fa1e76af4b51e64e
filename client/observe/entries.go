package observe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/bpfarm/bpfarm/client/decode"
)

// MaxEntries bounds how many entries Entries reads from one map.
const MaxEntries = 1 << 20

// Entry is one entry of a map, decoded.
type Entry struct {
	// Key is the decoded key (nil for a map of globals).
	Key any
	// Value is the decoded value; for a per-CPU map, PerCPU holds one
	// value per possible CPU and Value their sum when the values are
	// histograms (else nil).
	Value  any
	PerCPU []any
	// RawKey and RawValues are the bytes (one value per CPU for per-CPU
	// maps).
	RawKey    []byte
	RawValues [][]byte
}

// Globals reports whether m holds global variables (.rodata, .data, .bss
// and their named variants).
func (m *Map) Globals() bool {
	return strings.HasPrefix(m.Name, ".")
}

// Entries reads all of m's entries (at most MaxEntries), decoded with its
// key and value types. Without a type, keys and values decode as
// decode.Bytes.
func (m *Map) Entries() ([]Entry, error) {
	if m.Output() {
		return nil, fmt.Errorf("map %s is a %s: follow it with Events", m.Name, m.Type)
	}
	em, err := m.open(true)
	if err != nil {
		return nil, err
	}
	defer em.Close()

	var out []Entry
	var key []byte
	perCPU := m.PerCPU()
	iter := em.Iterate()
	for len(out) < MaxEntries {
		var e Entry
		var ok bool
		if perCPU {
			ok = iter.Next(&key, &e.RawValues)
		} else {
			var v []byte
			ok = iter.Next(&key, &v)
			e.RawValues = [][]byte{v}
		}
		if !ok {
			break
		}
		e.RawKey = append([]byte(nil), key...)
		if err := m.decodeEntry(&e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("map %s: %w", m.Name, err)
	}
	return out, nil
}

// Lookup reads the entry of m whose raw key is key.
func (m *Map) Lookup(key []byte) (*Entry, error) {
	em, err := m.open(true)
	if err != nil {
		return nil, err
	}
	defer em.Close()
	e := &Entry{RawKey: key}
	if m.PerCPU() {
		err = em.Lookup(key, &e.RawValues)
	} else {
		var v []byte
		err = em.Lookup(key, &v)
		e.RawValues = [][]byte{v}
	}
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", m.Name, err)
	}
	return e, m.decodeEntry(e)
}

// decodeEntry fills in e's decoded key and values.
func (m *Map) decodeEntry(e *Entry) error {
	if !m.Globals() {
		k, err := decodeOr(m.Key, e.RawKey)
		if err != nil {
			return fmt.Errorf("map %s: key: %w", m.Name, err)
		}
		e.Key = k
	}
	if !m.PerCPU() {
		v, err := decodeOr(m.Value, e.RawValues[0])
		if err != nil {
			return fmt.Errorf("map %s: value: %w", m.Name, err)
		}
		e.Value = v
		return nil
	}
	var sum *decode.Histogram
	for _, raw := range e.RawValues {
		v, err := decodeOr(m.Value, raw)
		if err != nil {
			return fmt.Errorf("map %s: value: %w", m.Name, err)
		}
		e.PerCPU = append(e.PerCPU, v)
		if h, ok := histogramOf(v); ok {
			if sum == nil {
				sum = &decode.Histogram{}
			}
			sum.Add(h)
		}
	}
	if sum != nil {
		e.Value = *sum
	}
	return nil
}

// decodeOr decodes b with d, or returns it as decode.Bytes without d.
func decodeOr(d *decode.Decoder, b []byte) (any, error) {
	if d == nil {
		return decode.Bytes(append([]byte(nil), b...)), nil
	}
	return d.Decode(b)
}

// histogramOf returns the histogram of a decoded value: the value itself,
// or its "slots" field.
func histogramOf(v any) (decode.Histogram, bool) {
	switch v := v.(type) {
	case decode.Histogram:
		return v, true
	case decode.Struct:
		if s, ok := v.Get("slots"); ok {
			h, ok := s.(decode.Histogram)
			return h, ok
		}
	}
	return decode.Histogram{}, false
}

// Histogram returns the log2 histogram of a decoded value (the value, or
// its "slots" member), and whether it has one.
func Histogram(v any) (decode.Histogram, bool) { return histogramOf(v) }

// EntriesAs reads all of m's entries into keys and values of the caller's
// types (fixed-size Go types laid out like the C types, as encoding/binary
// reads them in the host's byte order). It does not support per-CPU maps:
// use Entries.
func EntriesAs[K comparable, V any](m *Map) (map[K]V, error) {
	if m.PerCPU() {
		return nil, errors.New("EntriesAs: per-CPU map " + m.Name + ": use Entries")
	}
	em, err := m.open(true)
	if err != nil {
		return nil, err
	}
	defer em.Close()
	out := make(map[K]V)
	var kb, vb []byte
	iter := em.Iterate()
	for len(out) < MaxEntries && iter.Next(&kb, &vb) {
		var k K
		var v V
		if _, err := binary.Decode(kb, binary.NativeEndian, &k); err != nil {
			return nil, fmt.Errorf("map %s: key into %T: %w", m.Name, k, err)
		}
		if _, err := binary.Decode(vb, binary.NativeEndian, &v); err != nil {
			return nil, fmt.Errorf("map %s: value into %T: %w", m.Name, v, err)
		}
		out[k] = v
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("map %s: %w", m.Name, err)
	}
	return out, nil
}
