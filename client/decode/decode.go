// Package decode turns the raw bytes of BPF records and map entries into
// values, using the BTF type the object declares for them.
//
// A Decoder is compiled once per type into a plan (offsets, sizes, field
// names already quoted for JSON, enum names) and then decodes any number of
// records without reflection:
//
//   - structs and unions decode by field (Struct keeps the field order);
//   - char arrays decode as strings, cut at the first NUL;
//   - enums decode by name (by number for a value the enum does not name);
//   - nested structs and arrays nest;
//   - a member named "slots" that is an array of integer counters is a log2
//     histogram (the libbpf-tools convention) and decodes as a Histogram;
//   - pointers decode as unsigned integers, anything else the plan cannot
//     name as its bytes.
//
// The package is pure Go (no cgo) and reads integers in the host's byte
// order, which is the order BPF programs write them in.
package decode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/cilium/ebpf/btf"
)

// maxDepth bounds the nesting of types a plan follows.
const maxDepth = 32

// ErrSize is returned (wrapped in a *SizeError) when a record's size does
// not match its type's.
var ErrSize = errors.New("record size does not match its type")

// SizeError reports a record whose size disagrees with its type.
type SizeError struct {
	// Type is the C name of the record's type.
	Type string
	// Want is the type's size and Got the record's, in bytes.
	Want, Got int
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("record of %d bytes, but %s has %d", e.Got, e.Type, e.Want)
}

// Is makes errors.Is(err, ErrSize) hold.
func (e *SizeError) Is(target error) bool { return target == ErrSize }

// kind is what a plan node decodes.
type kind uint8

const (
	kindUint kind = iota
	kindInt
	kindBool
	kindFloat
	kindString
	kindEnum
	kindStruct
	kindArray
	kindHist
	kindBytes
)

// node is one step of a decoding plan. Offsets are relative to the
// enclosing node's start.
type node struct {
	kind kind
	// off and size locate the node's bytes.
	off, size int
	// bitOff and bits describe a bitfield (bits != 0): the value is bits
	// bits starting bitOff bits after off.
	bitOff, bits int

	// name is the field's name and jsonKey `"name":` (struct members).
	name    string
	jsonKey []byte

	fields []*node // kindStruct
	elem   *node   // kindArray, kindHist: the element; its off is 0
	n      int     // kindArray, kindHist: element count

	enum   map[uint64]string // kindEnum
	signed bool              // kindEnum: a signed enum

	// width is the column width for text tables.
	width int
}

// Decoder decodes values of one BTF type. It is safe for concurrent use.
type Decoder struct {
	typ  btf.Type
	name string
	size int
	root *node
	hist bool
	flat plan // the JSON plan, unrolled
}

// New compiles a Decoder for typ. Qualifiers and typedefs are looked
// through. It fails for types without a size (void, functions) and for
// types nested deeper than the plan follows.
func New(typ btf.Type) (*Decoder, error) {
	if typ == nil {
		return nil, errors.New("decode: no type")
	}
	size, err := btf.Sizeof(typ)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", TypeName(typ), err)
	}
	if size == 0 {
		return nil, fmt.Errorf("decode %s: type has no size", TypeName(typ))
	}
	root, err := compile(typ, 0)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", TypeName(typ), err)
	}
	d := &Decoder{typ: typ, name: TypeName(typ), size: size, root: root, flat: newPlan(root, size)}
	d.hist = root.kind == kindHist
	if root.kind == kindStruct {
		for _, f := range root.fields {
			if f.kind == kindHist {
				d.hist = true
			}
		}
	}
	return d, nil
}

// Type returns the type d decodes.
func (d *Decoder) Type() btf.Type { return d.typ }

// TypeName returns the C name of the type d decodes, e.g. "struct event".
func (d *Decoder) TypeName() string { return d.name }

// Size returns the size in bytes of the type d decodes.
func (d *Decoder) Size() int { return d.size }

// Histogram reports whether the type is, or has a top-level member that
// is, a log2 histogram.
func (d *Decoder) Histogram() bool { return d.hist }

// check returns a *SizeError unless b has exactly d's size.
func (d *Decoder) check(b []byte) error {
	if len(b) != d.size {
		return &SizeError{Type: d.name, Want: d.size, Got: len(b)}
	}
	return nil
}

// compile builds the plan for typ.
func compile(typ btf.Type, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("types nested more than %d deep", maxDepth)
	}
	switch t := btf.UnderlyingType(typ).(type) {
	case *btf.Int:
		n := &node{size: int(t.Size)}
		switch {
		case t.Encoding&btf.Bool != 0:
			n.kind = kindBool
		case t.Size > 8:
			n.kind = kindBytes
		case t.Encoding&btf.Signed != 0:
			n.kind = kindInt
		default:
			n.kind = kindUint
		}
		n.width = intWidth(n.kind, n.size)
		return n, nil
	case *btf.Pointer:
		return &node{kind: kindUint, size: 8, width: 18}, nil
	case *btf.Float:
		return &node{kind: kindFloat, size: int(t.Size), width: 12}, nil
	case *btf.Enum:
		n := &node{kind: kindEnum, size: int(t.Size), enum: make(map[uint64]string, len(t.Values))}
		for _, v := range t.Values {
			if _, dup := n.enum[v.Value]; !dup {
				n.enum[v.Value] = v.Name
			}
			n.width = max(n.width, len(v.Name))
		}
		n.width = min(max(n.width, 4), 24)
		n.signed = t.Signed
		return n, nil
	case *btf.Array:
		elemSize, err := btf.Sizeof(t.Type)
		if err != nil {
			return nil, err
		}
		if isChar(t.Type) {
			return &node{kind: kindString, size: int(t.Nelems) * elemSize, width: min(max(int(t.Nelems), 4), 32)}, nil
		}
		elem, err := compile(t.Type, depth+1)
		if err != nil {
			return nil, err
		}
		return &node{kind: kindArray, size: int(t.Nelems) * elemSize, elem: elem, n: int(t.Nelems), width: 24}, nil
	case *btf.Struct:
		return compileMembers(t.Members, int(t.Size), depth)
	case *btf.Union:
		return compileMembers(t.Members, int(t.Size), depth)
	case *btf.Datasec:
		n := &node{kind: kindStruct, size: int(t.Size), width: 24}
		for _, vs := range t.Vars {
			v, ok := vs.Type.(*btf.Var)
			if !ok {
				continue
			}
			f, err := compile(v.Type, depth+1)
			if err != nil {
				return nil, err
			}
			f.off = int(vs.Offset)
			if f.off+f.size > n.size {
				return nil, fmt.Errorf("variable %s: %d bytes at offset %d, outside the %d bytes of its section", v.Name, f.size, f.off, n.size)
			}
			f.name = v.Name
			f.jsonKey = appendKey(nil, v.Name)
			n.fields = append(n.fields, f)
		}
		return n, nil
	default:
		size, err := btf.Sizeof(typ)
		if err != nil {
			return nil, err
		}
		return &node{kind: kindBytes, size: size, width: min(2*size+2, 34)}, nil
	}
}

// compileMembers builds the plan of a struct or union.
func compileMembers(members []btf.Member, size, depth int) (*node, error) {
	n := &node{kind: kindStruct, size: size, width: 24}
	anon := 0
	for _, m := range members {
		f, err := compile(m.Type, depth+1)
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", m.Name, err)
		}
		f.off = int(m.Offset / 8)
		if m.BitfieldSize != 0 {
			if f.kind != kindUint && f.kind != kindInt && f.kind != kindBool && f.kind != kindEnum {
				return nil, fmt.Errorf("member %s: bitfield of %s", m.Name, TypeName(m.Type))
			}
			f.bitOff = int(m.Offset % 8)
			f.bits = int(m.BitfieldSize)
			f.size = (f.bitOff + f.bits + 7) / 8
		}
		if f.off+f.size > size {
			return nil, fmt.Errorf("member %s: %d bytes at offset %d, outside the %d bytes of its type", m.Name, f.size, f.off, size)
		}
		name := m.Name
		if name == "" {
			// An anonymous struct or union: its members are the
			// parent's, as in C.
			if f.kind == kindStruct {
				for _, sub := range f.fields {
					sub.off += f.off
					n.fields = append(n.fields, sub)
				}
				continue
			}
			name = "_" + strconv.Itoa(anon)
			anon++
		}
		if name == "slots" && f.kind == kindArray && f.n >= 2 && f.elem.kind == kindUint && (f.elem.size == 4 || f.elem.size == 8) {
			f.kind = kindHist
		}
		f.name = name
		f.jsonKey = appendKey(nil, name)
		n.fields = append(n.fields, f)
	}
	return n, nil
}

// isChar reports whether t is a C char (an array of which is a string).
func isChar(t btf.Type) bool {
	i, ok := btf.UnderlyingType(t).(*btf.Int)
	if !ok || i.Size != 1 {
		return false
	}
	return i.Encoding&btf.Char != 0 || i.Name == "char" || i.Name == "signed char"
}

// intWidth is the text column width of an integer.
func intWidth(k kind, size int) int {
	switch {
	case k == kindBool:
		return 5
	case size <= 2:
		return 6
	case size <= 4:
		return 10
	default:
		return 20
	}
}

// appendKey appends `"name":`.
func appendKey(dst []byte, name string) []byte {
	dst = appendJSONString(dst, name)
	return append(dst, ':')
}

// uintAt reads n's unsigned value at base.
func (n *node) uintAt(b []byte, base int) uint64 {
	p := b[base+n.off:]
	if n.bits != 0 {
		var v uint64
		for i := n.size - 1; i >= 0; i-- {
			v = v<<8 | uint64(p[i])
		}
		v >>= uint(n.bitOff)
		if n.bits < 64 {
			v &= 1<<uint(n.bits) - 1
		}
		return v
	}
	switch n.size {
	case 1:
		return uint64(p[0])
	case 2:
		return uint64(binary.NativeEndian.Uint16(p))
	case 4:
		return uint64(binary.NativeEndian.Uint32(p))
	case 8:
		return binary.NativeEndian.Uint64(p)
	}
	return 0
}

// intAt reads n's signed value at base.
func (n *node) intAt(b []byte, base int) int64 {
	v := n.uintAt(b, base)
	bits := n.size * 8
	if n.bits != 0 {
		bits = n.bits
	}
	if bits >= 64 {
		return int64(v)
	}
	shift := uint(64 - bits)
	return int64(v<<shift) >> shift
}

// floatAt reads n's float value at base.
func (n *node) floatAt(b []byte, base int) float64 {
	p := b[base+n.off:]
	switch n.size {
	case 4:
		return float64(math.Float32frombits(binary.NativeEndian.Uint32(p)))
	case 8:
		return math.Float64frombits(binary.NativeEndian.Uint64(p))
	}
	return math.NaN()
}

// enumAt returns n's value at base: its name ("" if the enum names none)
// and the number, sign-extended for signed enums.
func (n *node) enumAt(b []byte, base int) (name string, signed bool, v uint64) {
	if n.signed {
		v = uint64(n.intAt(b, base))
	} else {
		v = n.uintAt(b, base)
	}
	return n.enum[v], n.signed, v
}

// stringAt returns n's string at base: up to the first NUL.
func (n *node) stringAt(b []byte, base int) []byte {
	p := b[base+n.off : base+n.off+n.size]
	for i, c := range p {
		if c == 0 {
			return p[:i]
		}
	}
	return p
}

// TypeName returns a C-like name of typ: "struct event", "u32",
// "char[16]", "enum state".
func TypeName(typ btf.Type) string {
	switch t := typ.(type) {
	case nil:
		return "void"
	case *btf.Typedef:
		return t.Name
	case *btf.Const:
		return TypeName(t.Type)
	case *btf.Volatile:
		return TypeName(t.Type)
	case *btf.Restrict:
		return TypeName(t.Type)
	case *btf.TypeTag:
		return TypeName(t.Type)
	case *btf.Struct:
		return "struct " + orAnon(t.Name)
	case *btf.Union:
		return "union " + orAnon(t.Name)
	case *btf.Enum:
		return "enum " + orAnon(t.Name)
	case *btf.Array:
		return TypeName(t.Type) + "[" + strconv.Itoa(int(t.Nelems)) + "]"
	case *btf.Pointer:
		return TypeName(t.Target) + " *"
	case *btf.Datasec:
		return "section " + t.Name
	}
	if name := typ.TypeName(); name != "" {
		return name
	}
	return fmt.Sprintf("%T", typ)
}

func orAnon(name string) string {
	if name == "" {
		return "(anon)"
	}
	return name
}
