package decode

import (
	"encoding/binary"
	"math"
)

// maxUnrolled bounds how many leaf values of an array the flat JSON plan
// unrolls; larger arrays (and histograms) run through the node tree.
const maxUnrolled = 256

// opKind is what one step of a flat JSON plan appends.
type opKind uint8

const (
	opU8 opKind = iota
	opU16
	opU32
	opU64
	opS8
	opS16
	opS32
	opS64
	opString
	opBool
	opEnum
	opFloat
	opNode // anything else: n.appendJSON(dst, b, base)
	opEnd  // only the literal
)

// op is one step of a flat JSON plan: a literal (keys, braces, commas)
// then a value at a fixed offset.
type op struct {
	kind opKind
	off  int
	size int
	lit  []byte
	n    *node
}

// bop is one step of a bounded plan: up to 16 bytes of literal, stored
// whole (the encoder then advances by nlit), then a value. A longer
// literal is split over steps of kind opEnd.
type bop struct {
	lit  [16]byte
	off  uint32
	size uint32
	nlit uint8
	kind opKind
	node uint16  // opBool, opEnum, opFloat, opNode: the index of its node in plan.nodes
	_    [4]byte // 32 bytes: a step's address is a shift
}

// plan is a flat JSON plan. A plan whose output has a bound (max ≥ 0:
// no histogram, no large array) runs as bops, writing by index into a
// buffer grown once; any other as ops, appending.
type plan struct {
	ops   []op
	bops  []bop
	tail  bop     // the bops' closing literal
	nodes []*node // of the bops that run through the node tree
	max   int
	size  int // of the record
}

// slack is how many bytes past its result the bounded encoder may
// overwrite: a literal's two words, or a number's last eight digits.
const slack = 16

// newPlan compiles n, the root of a record of size bytes, into a plan.
func newPlan(n *node, size int) plan {
	p := plan{ops: flatten(n), size: size}
	for _, o := range p.ops {
		m := maxJSON(o)
		if m < 0 {
			p.max = -1
			p.bops = nil
			return p
		}
		if o.kind < opBool && o.off+o.size > size {
			// The bounded encoder reads without bounds checks: it
			// takes only plans that stay inside the record (compile
			// refuses members that do not, so this does not happen).
			p.max = -1
			p.bops = nil
			return p
		}
		p.max += len(o.lit) + m
		lit := o.lit
		for len(lit) > 16 {
			p.bops = append(p.bops, newBop(lit[:16], op{kind: opEnd}))
			lit = lit[16:]
		}
		b := newBop(lit, o)
		if o.kind >= opBool && o.kind < opEnd {
			if len(p.nodes) > math.MaxUint16 {
				p.max = -1
				p.bops = nil
				return p
			}
			b.node = uint16(len(p.nodes))
			p.nodes = append(p.nodes, o.n)
		}
		p.bops = append(p.bops, b)
	}
	// The last step is the closing literal: stored after the loop.
	p.tail = p.bops[len(p.bops)-1]
	p.bops = p.bops[:len(p.bops)-1]
	return p
}

// newBop is the bounded step of o, after lit (at most 16 bytes).
func newBop(lit []byte, o op) bop {
	b := bop{
		off:  uint32(o.off),
		size: uint32(o.size),
		nlit: uint8(len(lit)),
		kind: o.kind,
	}
	copy(b.lit[:], lit)
	return b
}

// maxJSON returns the most bytes o's value can append, or -1 when it has
// no small bound (histograms, large arrays).
func maxJSON(o op) int {
	switch o.kind {
	case opU8:
		return 3
	case opU16:
		return 5
	case opU32:
		return 10
	case opU64, opS64:
		return 20
	case opS8:
		return 4
	case opS16:
		return 6
	case opS32:
		return 11
	case opString:
		return 2 + 6*o.size // every byte escaped as \u00XX or \ufffd
	case opEnd:
		return 0
	}
	return nodeMaxJSON(o.n)
}

// nodeMaxJSON returns the most bytes n.appendJSON can append, or -1.
func nodeMaxJSON(n *node) int {
	switch n.kind {
	case kindUint, kindInt:
		return 20 // a bitfield or an odd size: 64 bits at most
	case kindBool:
		return 5
	case kindFloat:
		return 24 // -2.2250738585072014e-308
	case kindEnum:
		m := 20
		for _, name := range n.enum {
			m = max(m, len(appendJSONString(nil, name)))
		}
		return m
	case kindString:
		return 2 + 6*n.size
	case kindBytes:
		return 4 + 2*n.size
	}
	return -1
}

// flatten compiles n, at base, into ops: structs and small arrays are
// unrolled so that encoding a record is one loop over leaf values.
func flatten(n *node) []op {
	var ops []op
	var lit []byte
	var walk func(n *node, base int)
	walk = func(n *node, base int) {
		switch {
		case n.kind == kindStruct:
			lit = append(lit, '{')
			for i, f := range n.fields {
				if i > 0 {
					lit = append(lit, ',')
				}
				lit = append(lit, f.jsonKey...)
				walk(f, base+n.off)
			}
			lit = append(lit, '}')
			return
		case n.kind == kindArray && n.n*leaves(n.elem) <= maxUnrolled:
			lit = append(lit, '[')
			for i := 0; i < n.n; i++ {
				if i > 0 {
					lit = append(lit, ',')
				}
				walk(n.elem, base+n.off+i*n.elem.size)
			}
			lit = append(lit, ']')
			return
		}
		o := op{kind: opNode, off: base + n.off, size: n.size, lit: lit, n: n}
		if n.bits == 0 {
			switch n.kind {
			case kindUint:
				o.kind = [...]opKind{1: opU8, 2: opU16, 4: opU32, 8: opU64}[min(n.size, 8)]
			case kindInt:
				o.kind = [...]opKind{1: opS8, 2: opS16, 4: opS32, 8: opS64}[min(n.size, 8)]
			case kindString:
				o.kind = opString
			case kindBool:
				o.kind = opBool
			case kindEnum:
				o.kind = opEnum
			case kindFloat:
				o.kind = opFloat
			}
			if (n.kind == kindUint || n.kind == kindInt) && n.size != 1 && n.size != 2 && n.size != 4 && n.size != 8 {
				o.kind = opNode
			}
		}
		if o.kind >= opBool {
			o.off = base // the node's methods add n.off
		}
		ops = append(ops, o)
		lit = nil
	}
	walk(n, 0)
	ops = append(ops, op{kind: opEnd, lit: lit})
	return ops
}

// leaves counts the leaf values of n (for the unrolling bound).
func leaves(n *node) int {
	switch n.kind {
	case kindStruct:
		c := 0
		for _, f := range n.fields {
			c += leaves(f)
		}
		return max(c, 1)
	case kindArray:
		return n.n * leaves(n.elem)
	}
	return 1
}

// appendFlat runs ops over b.
func appendFlat(dst []byte, ops []op, b []byte) []byte {
	for i := range ops {
		o := &ops[i]
		dst = append(dst, o.lit...)
		switch o.kind {
		case opU8:
			dst = appendUint(dst, uint64(b[o.off]))
		case opU16:
			dst = appendUint(dst, uint64(binary.NativeEndian.Uint16(b[o.off:])))
		case opU32:
			dst = appendUint(dst, uint64(binary.NativeEndian.Uint32(b[o.off:])))
		case opU64:
			dst = appendUint(dst, binary.NativeEndian.Uint64(b[o.off:]))
		case opS8:
			dst = appendInt(dst, int64(int8(b[o.off])))
		case opS16:
			dst = appendInt(dst, int64(int16(binary.NativeEndian.Uint16(b[o.off:]))))
		case opS32:
			dst = appendInt(dst, int64(int32(binary.NativeEndian.Uint32(b[o.off:]))))
		case opS64:
			dst = appendInt(dst, int64(binary.NativeEndian.Uint64(b[o.off:])))
		case opString:
			s := b[o.off : o.off+o.size]
			for j, c := range s {
				if c == 0 {
					s = s[:j]
					break
				}
			}
			dst = appendJSONBytes(dst, s)
		case opEnd:
		default:
			dst = o.n.appendJSON(dst, b, o.off)
		}
	}
	return dst
}
