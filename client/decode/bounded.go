package decode

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"unsafe"
)

// The bounded encoder: a plan whose output has a bound (plan.max) runs as
// a loop over bops that writes by index into dst grown once, with neither
// append's nor the bounds checks' cost. It stays in bounds by
// construction: dst has room for p.max+slack bytes and every step writes
// at most its own bound (plus slack past the end); newPlan admits only
// steps that read inside the record, whose length AppendJSON checked.

// at8 returns the eight bytes at p+off.
func at8(p unsafe.Pointer, off uintptr) *[8]byte { return (*[8]byte)(unsafe.Add(p, off)) }

// appendBounded runs p's bops over b (exactly the type's size): integers
// and C strings are written in place, without calls; anything rarer
// (other kinds, escapes, integers of 17 digits or more) goes through
// boundedSlow, appending within dst's capacity.
func (p *plan) appendBounded(dst, b []byte) []byte {
	l := len(dst)
	dst = slices.Grow(dst, p.max+slack)
	out := unsafe.Pointer(unsafe.SliceData(dst[l:cap(dst)]))
	rec := unsafe.Pointer(unsafe.SliceData(b))
	w := uintptr(0)
	ops := p.bops
	for i := range ops {
		o := &ops[i]
		*(*[16]byte)(unsafe.Add(out, w)) = o.lit
		w += uintptr(o.nlit)
		src := unsafe.Add(rec, o.off)
		var v uint64
		switch o.kind {
		case opU8:
			v = uint64(*(*uint8)(src))
		case opU16:
			v = uint64(binary.NativeEndian.Uint16((*[2]byte)(src)[:]))
		case opU32:
			v = uint64(binary.NativeEndian.Uint32((*[4]byte)(src)[:]))
		case opU64:
			v = binary.NativeEndian.Uint64((*[8]byte)(src)[:])
		case opS8:
			v = uint64(int64(*(*int8)(src)))
		case opS16:
			v = uint64(int64(int16(binary.NativeEndian.Uint16((*[2]byte)(src)[:]))))
		case opS32:
			v = uint64(int64(int32(binary.NativeEndian.Uint32((*[4]byte)(src)[:]))))
		case opS64:
			v = binary.NativeEndian.Uint64((*[8]byte)(src)[:])
		case opString:
			// Whole words copied and scanned at once (see special) up
			// to the NUL or a byte to escape.
			*(*byte)(unsafe.Add(out, w)) = '"'
			w++
			n := uintptr(o.size)
			j := uintptr(0)
			for ; j+8 <= n; j += 8 {
				x := binary.LittleEndian.Uint64(at8(src, j)[:])
				binary.LittleEndian.PutUint64(at8(out, w+j)[:], x)
				if m := special(x); m != 0 {
					j += uintptr(bits.TrailingZeros64(m) / 8)
					break
				}
			}
			if j >= n || *(*byte)(unsafe.Add(src, j)) != 0 {
				// A tail shorter than a word, or a byte to escape.
				w = boundedSlow(o, dst, l, w+j, b, j)
				continue
			}
			*(*byte)(unsafe.Add(out, w+j)) = '"'
			w += j + 1
			continue
		case opEnd:
			continue
		default:
			w = boundedSlow(o, dst, l, w, b, 0)
			continue
		}
		// An integer's digits.
		if o.kind >= opS8 && int64(v) < 0 {
			*(*byte)(unsafe.Add(out, w)) = '-'
			w++
			v = -v
		}
		switch {
		case v < 10:
			*(*byte)(unsafe.Add(out, w)) = byte('0' + v)
			w++
		case v < 1e8:
			d := digits8(uint32(v))
			lz := uint(bits.TrailingZeros64(d)) &^ 7 // leading zeros, in bits
			binary.LittleEndian.PutUint64(at8(out, w)[:], (d+ascii8)>>lz)
			w += 8 - uintptr(lz/8)
		case v < 1e16:
			hi, lo := digits8(uint32(v/1e8)), digits8(uint32(v%1e8))
			lz := uint(bits.TrailingZeros64(hi)) &^ 7
			binary.LittleEndian.PutUint64(at8(out, w)[:], (hi+ascii8)>>lz)
			w += 8 - uintptr(lz/8)
			binary.LittleEndian.PutUint64(at8(out, w)[:], lo+ascii8)
			w += 8
		default:
			w = uintptr(len(appendUint(dst[:l+int(w)], v)) - l)
		}
	}
	*(*[16]byte)(unsafe.Add(out, w)) = p.tail.lit
	return dst[:l+int(w)+int(p.tail.nlit)]
}

// boundedSlow runs the rare steps of appendBounded: it appends o's value
// within dst's capacity, at l+w, and returns the new w. A string step
// comes here at its j-th byte (w is past it): the rest of a tail shorter
// than a word, or from a byte to escape.
//
//go:noinline
func boundedSlow(o *bop, dst []byte, l int, w uintptr, b []byte, j uintptr) uintptr {
	out := dst[:l+int(w)]
	switch o.kind {
	case opString:
		s := b[uintptr(o.off)+j : o.off+o.size]
		k := 0
		for k < len(s) && strClass[s[k]] == 0 {
			k++
		}
		out = append(out, s[:k]...)
		s = s[k:]
		for k, c := range s {
			if c == 0 {
				s = s[:k]
				break
			}
		}
		out = append(appendJSONBody(out, s), '"')
	case opBool:
		if o.n.uintAt(b, int(o.off)) != 0 {
			out = append(out, "true"...)
		} else {
			out = append(out, "false"...)
		}
	default: // opEnum, opFloat, opNode
		out = o.n.appendJSON(out, b, int(o.off))
	}
	return uintptr(len(out) - l)
}
