package decode

import (
	"encoding/hex"
	"strconv"
	"strings"
)

// LeafKind is what a Leaf holds.
type LeafKind uint8

// Leaf kinds.
const (
	// LeafNumber is an integer, bool, float or pointer: Leaf.Float reads
	// it.
	LeafNumber LeafKind = iota
	// LeafString is a char array.
	LeafString
	// LeafEnum is an enum: its text is the value's name.
	LeafEnum
	// LeafHistogram is a log2 histogram (a slots[] array of counters):
	// Leaf.Slots and Leaf.Slot read it.
	LeafHistogram
	// LeafOther is anything else (arrays, 128-bit integers): its text is
	// the JSON of an array or the bytes in hex.
	LeafOther
)

// Leaf is one scalar of a type: the type itself, or a member reached
// through its structs and unions (arrays are not entered). Reading a leaf
// allocates nothing, so that callers can walk many records with it, as
// metrics exporters do.
type Leaf struct {
	// Path names the leaf: the member names from the type down to it,
	// joined with '.' ("" when the type itself is the leaf).
	Path string
	// Kind is what the leaf holds.
	Kind LeafKind
	n    *node
	off  int
}

// Leaves returns the scalars of d's type, in declaration order.
func (d *Decoder) Leaves() []Leaf {
	var out []Leaf
	var walk func(n *node, path []string, base int)
	walk = func(n *node, path []string, base int) {
		if n.kind == kindStruct {
			for _, f := range n.fields {
				walk(f, append(path, f.name), base+n.off)
			}
			return
		}
		l := Leaf{Path: strings.Join(path, "."), n: n, off: base}
		switch n.kind {
		case kindUint, kindInt, kindBool, kindFloat:
			l.Kind = LeafNumber
		case kindString:
			l.Kind = LeafString
		case kindEnum:
			l.Kind = LeafEnum
		case kindHist:
			l.Kind = LeafHistogram
		default:
			l.Kind = LeafOther
		}
		out = append(out, l)
	}
	walk(d.root, nil, 0)
	return out
}

// TypeName returns the C name of the leaf's type as far as the plan knows
// it: "integer", "char[]", "enum", "histogram" or "array".
func (l Leaf) TypeName() string {
	switch l.n.kind {
	case kindUint, kindInt:
		return strconv.Itoa(l.n.size*8) + "-bit integer"
	case kindBool:
		return "bool"
	case kindFloat:
		return "float"
	case kindString:
		return "char array"
	case kindEnum:
		return "enum"
	case kindHist:
		return "log2 histogram"
	case kindArray:
		return "array"
	}
	return strconv.Itoa(l.n.size) + "-byte value"
}

// Float returns a LeafNumber's (or a LeafEnum's) value in b, a record of
// the decoder's size; 0 for other kinds.
func (l Leaf) Float(b []byte) float64 {
	switch l.n.kind {
	case kindUint:
		return float64(l.n.uintAt(b, l.off))
	case kindInt:
		return float64(l.n.intAt(b, l.off))
	case kindBool:
		if l.n.uintAt(b, l.off) != 0 {
			return 1
		}
		return 0
	case kindFloat:
		return l.n.floatAt(b, l.off)
	case kindEnum:
		_, signed, v := l.n.enumAt(b, l.off)
		if signed {
			return float64(int64(v))
		}
		return float64(v)
	}
	return 0
}

// AppendText appends the leaf's value in b, a record of the decoder's
// size, as text: integers in decimal, enums by name, char arrays up to
// their NUL (as they are: the caller escapes them for its format),
// anything else as Decoder.AppendText prints it.
func (l Leaf) AppendText(dst, b []byte) []byte {
	switch l.n.kind {
	case kindUint:
		return strconv.AppendUint(dst, l.n.uintAt(b, l.off), 10)
	case kindInt:
		return strconv.AppendInt(dst, l.n.intAt(b, l.off), 10)
	case kindBool:
		return strconv.AppendBool(dst, l.n.uintAt(b, l.off) != 0)
	case kindString:
		return append(dst, l.n.stringAt(b, l.off)...)
	case kindBytes:
		dst = append(dst, "0x"...)
		return hex.AppendEncode(dst, b[l.off+l.n.off:l.off+l.n.off+l.n.size])
	}
	return l.n.appendText(dst, b, l.off)
}

// Slots returns a LeafHistogram's slot count (0 for other kinds).
func (l Leaf) Slots() int {
	if l.n.kind != kindHist {
		return 0
	}
	return l.n.n
}

// Slot returns the count of a LeafHistogram's slot i in b, a record of the
// decoder's size: the values v with 2^(i-1) <= v < 2^i (see SlotRange).
func (l Leaf) Slot(b []byte, i int) uint64 {
	return l.n.elem.uintAt(b, l.off+l.n.off+i*l.n.elem.size)
}
