package decode

import (
	"encoding/binary"
	"slices"
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
	// lw holds lit's first 16 bytes as two little-endian words, stored
	// whole by the bounded encoder (which then advances by len(lit)).
	lw [2]uint64
	n  *node
}

// plan is a flat JSON plan: ops, and the most bytes they can append (-1
// when an opNode makes it unbounded).
type plan struct {
	ops []op
	max int
}

// slack is how many bytes past its result the bounded encoder may
// overwrite (a literal's two words).
const slack = 16

// newPlan compiles n into a plan.
func newPlan(n *node) plan {
	p := plan{ops: flatten(n)}
	for i := range p.ops {
		o := &p.ops[i]
		var w [16]byte
		copy(w[:], o.lit)
		o.lw = [2]uint64{binary.LittleEndian.Uint64(w[:8]), binary.LittleEndian.Uint64(w[8:])}
		if p.max < 0 {
			continue
		}
		p.max += len(o.lit)
		switch o.kind {
		case opU8:
			p.max += 3
		case opU16:
			p.max += 5
		case opU32:
			p.max += 10
		case opU64:
			p.max += 20
		case opS8:
			p.max += 4
		case opS16:
			p.max += 6
		case opS32:
			p.max += 11
		case opS64:
			p.max += 20
		case opString:
			p.max += 2 + 6*o.size // every byte escaped as \u00XX or \ufffd
		case opEnd:
		default:
			p.max = -1
		}
	}
	return p
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
			}
			if (n.kind == kindUint || n.kind == kindInt) && n.size != 1 && n.size != 2 && n.size != 4 && n.size != 8 {
				o.kind = opNode
			}
		}
		if o.kind == opNode {
			o.off = base // node.appendJSON adds n.off
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

// append runs p over b.
func (p *plan) append(dst, b []byte) []byte {
	if p.max < 0 {
		return appendFlat(dst, p.ops, b)
	}
	return p.appendBounded(dst, b)
}

// appendBounded runs p, which has no opNode, over b: it grows dst once to
// p.max (plus slack) and then writes by index, without append's checks.
func (p *plan) appendBounded(dst, b []byte) []byte {
	l := len(dst)
	dst = slices.Grow(dst, p.max+slack)
	out := dst[l : l+p.max+slack]
	w := 0
	for i := range p.ops {
		o := &p.ops[i]
		if n := len(o.lit); n <= 16 {
			binary.LittleEndian.PutUint64(out[w:], o.lw[0])
			binary.LittleEndian.PutUint64(out[w+8:], o.lw[1])
			w += n
		} else {
			w += copy(out[w:], o.lit)
		}
		switch o.kind {
		case opU8:
			w = putUint(out, w, uint64(b[o.off]))
		case opU16:
			w = putUint(out, w, uint64(binary.NativeEndian.Uint16(b[o.off:])))
		case opU32:
			w = putUint(out, w, uint64(binary.NativeEndian.Uint32(b[o.off:])))
		case opU64:
			w = putUint(out, w, binary.NativeEndian.Uint64(b[o.off:]))
		case opS8:
			w = putInt(out, w, int64(int8(b[o.off])))
		case opS16:
			w = putInt(out, w, int64(int16(binary.NativeEndian.Uint16(b[o.off:]))))
		case opS32:
			w = putInt(out, w, int64(int32(binary.NativeEndian.Uint32(b[o.off:]))))
		case opS64:
			w = putInt(out, w, int64(binary.NativeEndian.Uint64(b[o.off:])))
		case opString:
			w = putString(out, w, b[o.off:o.off+o.size])
		}
	}
	return dst[:l+w]
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
		case opNode:
			dst = o.n.appendJSON(dst, b, o.off)
		}
	}
	return dst
}
