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
// boundedState's methods, appending within dst's capacity.
func (p *plan) appendBounded(dst, b []byte) []byte {
	l := len(dst)
	if cap(dst)-l < p.max+slack {
		dst = slices.Grow(dst, p.max+slack)
	}
	out := unsafe.Add(unsafe.Pointer(unsafe.SliceData(dst)), l)
	w := p.run(out, unsafe.Pointer(unsafe.SliceData(b)))
	*(*[16]byte)(unsafe.Add(out, w)) = p.tail.lit
	return dst[:l+int(w)+int(p.tail.nlit)]
}

// run runs p's bops over the record at rec (p.size bytes), writing at out
// (p.max+slack bytes), and returns how many bytes it wrote. A function of
// its own, so that its loop keeps only what it uses live (Go saves no
// register across calls).
//
//go:noinline
func (p *plan) run(out, rec unsafe.Pointer) uintptr {
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
				w = p.step(o, out, rec, w+j, j)
				continue
			}
			*(*byte)(unsafe.Add(out, w+j)) = '"'
			w += j + 1
			continue
		case opEnd:
			continue
		default:
			w = p.step(o, out, rec, w, 0)
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
			// The length from v directly, not from the digits: the next
			// steps' stores wait for w, not for the digits' longer chain.
			n := digitCount32(uint32(v))
			d := digits8(uint32(v)) + ascii8
			binary.LittleEndian.PutUint64(at8(out, w)[:], d>>((64-8*n)&63))
			w += uintptr(n)
		case v < 1e16:
			hi := uint32(v / 1e8)
			n := digitCount32(hi)
			d := digits8(hi) + ascii8
			binary.LittleEndian.PutUint64(at8(out, w)[:], d>>((64-8*n)&63))
			binary.LittleEndian.PutUint64(at8(out, w+uintptr(n))[:], digits8(uint32(v-uint64(hi)*1e8))+ascii8)
			w += uintptr(n) + 8
		default:
			w = p.uint(out, w, v)
		}
	}
	return w
}

// step runs a rare step of run: it appends o's value at out+w, within the
// plan's bound, and returns the new w. A string step comes here at its
// j-th byte (w is past it): the rest of a tail shorter than a word, or
// from a byte to escape.
//
//go:noinline
func (p *plan) step(o *bop, out, rec unsafe.Pointer, w uintptr, j uintptr) uintptr {
	dst := unsafe.Slice((*byte)(out), p.max+slack)[:w]
	b := unsafe.Slice((*byte)(rec), p.size)
	switch o.kind {
	case opString:
		str := b[uintptr(o.off)+j : o.off+o.size]
		k := 0
		for k < len(str) && strClass[str[k]] == 0 {
			k++
		}
		dst = append(dst, str[:k]...)
		str = str[k:]
		for k, c := range str {
			if c == 0 {
				str = str[:k]
				break
			}
		}
		dst = append(appendJSONBody(dst, str), '"')
	case opBool:
		if p.nodes[o.node].uintAt(b, int(o.off)) != 0 {
			dst = append(dst, "true"...)
		} else {
			dst = append(dst, "false"...)
		}
	default: // opEnum, opFloat, opNode
		dst = p.nodes[o.node].appendJSON(dst, b, int(o.off))
	}
	return uintptr(len(dst))
}

// uint appends v (17 digits or more) at out+w and returns the new w.
//
//go:noinline
func (p *plan) uint(out unsafe.Pointer, w uintptr, v uint64) uintptr {
	return uintptr(len(appendUint(unsafe.Slice((*byte)(out), p.max+slack)[:w], v)))
}
