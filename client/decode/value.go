package decode

import (
	"encoding/hex"
	"strconv"
)

// A decoded value is one of: int64 (signed integers), uint64 (unsigned
// integers and pointers), bool, float64, string (char arrays, and enum
// values by name), Struct, []any (arrays), Histogram or Bytes.

// Struct is a decoded struct, union or data section: its fields in
// declaration order.
type Struct []Field

// Field is one field of a Struct.
type Field struct {
	Name  string
	Value any
}

// Get returns the value of the field called name.
func (s Struct) Get(name string) (any, bool) {
	for _, f := range s {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

// MarshalJSON encodes s as a JSON object, fields in order.
func (s Struct) MarshalJSON() ([]byte, error) {
	return appendValueJSON(nil, s), nil
}

// Bytes is a value the plan has no better name for (e.g. a 128-bit
// integer): its bytes, printed in hex.
type Bytes []byte

// String returns b in hex, with a 0x prefix.
func (b Bytes) String() string { return "0x" + hex.EncodeToString(b) }

// MarshalJSON encodes b as a hex string.
func (b Bytes) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, b.String()), nil
}

// Histogram is a decoded log2 histogram: Slots[i] counts the values v
// with 2^(i-1) <= v < 2^i (slot 0 counts 0 and 1, as in libbpf-tools).
type Histogram struct {
	Slots []uint64
}

// Bucket is one bucket of a Histogram: Count values in [Low, High].
type Bucket struct {
	Low   uint64 `json:"low"`
	High  uint64 `json:"high"`
	Count uint64 `json:"count"`
}

// Buckets returns h's buckets up to the last one that is not empty (none
// if h is empty), like libbpf-tools print them.
func (h Histogram) Buckets() []Bucket {
	last := -1
	for i, c := range h.Slots {
		if c != 0 {
			last = i
		}
	}
	out := make([]Bucket, 0, last+1)
	for i := 0; i <= last; i++ {
		low, high := SlotRange(i)
		out = append(out, Bucket{Low: low, High: high, Count: h.Slots[i]})
	}
	return out
}

// Total returns the sum of h's counts.
func (h Histogram) Total() uint64 {
	var t uint64
	for _, c := range h.Slots {
		t += c
	}
	return t
}

// Add adds o's counts to h's (e.g. to sum per-CPU histograms).
func (h *Histogram) Add(o Histogram) {
	for len(h.Slots) < len(o.Slots) {
		h.Slots = append(h.Slots, 0)
	}
	for i, c := range o.Slots {
		h.Slots[i] += c
	}
}

// MarshalJSON encodes h as its buckets: [{"low":0,"high":1,"count":3},...].
func (h Histogram) MarshalJSON() ([]byte, error) {
	return appendBucketsJSON(nil, h.Slots), nil
}

// SlotRange returns the range of values log2 histogram slot i counts,
// as libbpf-tools' print_log2_hist labels it.
func SlotRange(i int) (low, high uint64) {
	if i >= 64 {
		return 1 << 63, 1<<64 - 1
	}
	high = uint64(1)<<uint(i+1) - 1
	if i == 63 {
		high = 1<<64 - 1
	}
	low = (high + 1) >> 1
	if i == 63 {
		low = 1 << 63
	}
	if low == high {
		low--
	}
	return low, high
}

// Decode decodes b, which must have exactly d's size, into a generic
// value (see the package documentation for the types).
func (d *Decoder) Decode(b []byte) (any, error) {
	if err := d.check(b); err != nil {
		return nil, err
	}
	return d.root.value(b, 0), nil
}

// value decodes n at base.
func (n *node) value(b []byte, base int) any {
	switch n.kind {
	case kindUint:
		return n.uintAt(b, base)
	case kindInt:
		return n.intAt(b, base)
	case kindBool:
		return n.uintAt(b, base) != 0
	case kindFloat:
		return n.floatAt(b, base)
	case kindString:
		return string(n.stringAt(b, base))
	case kindEnum:
		name, signed, v := n.enumAt(b, base)
		switch {
		case name != "":
			return name
		case signed:
			return int64(v)
		default:
			return v
		}
	case kindStruct:
		s := make(Struct, len(n.fields))
		for i, f := range n.fields {
			s[i] = Field{Name: f.name, Value: f.value(b, base+n.off)}
		}
		return s
	case kindArray:
		a := make([]any, n.n)
		start := base + n.off
		for i := range a {
			a[i] = n.elem.value(b, start+i*n.elem.size)
		}
		return a
	case kindHist:
		return Histogram{Slots: n.slots(b, base)}
	default:
		return Bytes(append([]byte(nil), b[base+n.off:base+n.off+n.size]...))
	}
}

// slots reads a histogram's counters.
func (n *node) slots(b []byte, base int) []uint64 {
	s := make([]uint64, n.n)
	start := base + n.off
	for i := range s {
		s[i] = n.elem.uintAt(b, start+i*n.elem.size)
	}
	return s
}
