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
// and C strings are written in place by a loop without calls (run); the
// rarer steps (other kinds, escapes, integers of 17 digits or more) go
// through step, appending within dst's capacity.
func (p *plan) appendBounded(dst, b []byte) []byte {
	l := len(dst)
	if cap(dst)-l < p.max+slack {
		dst = slices.Grow(dst, p.max+slack)
	}
	out := unsafe.Add(unsafe.Pointer(unsafe.SliceData(dst)), l)
	rec := unsafe.Pointer(unsafe.SliceData(b))
	w, i := p.run(out, rec, 0, 0)
	for i < len(p.bops) {
		w = p.step(&p.bops[i], out, rec, w)
		w, i = p.run(out, rec, w, i+1)
	}
	*(*[16]byte)(unsafe.Add(out, w)) = p.tail.lit
	return dst[:l+int(w)+int(p.tail.nlit)]
}

// run runs p's bops from the i-th over the record at rec (p.size bytes),
// writing at out+w (out has p.max+slack bytes), until the end or a step
// it leaves to step: it returns that step's index (len(p.bops) at the
// end) and the index in out after that step's literal. It calls nothing,
// so that its loop keeps its values in registers (Go saves none across
// calls).
func (p *plan) run(out, rec unsafe.Pointer, w uintptr, i int) (uintptr, int) {
	ops := p.bops
	for ; i < len(ops); i++ {
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
			// to the NUL; a byte to escape, or a tail shorter than a
			// word, is step's.
			n := uintptr(o.size)
			j := uintptr(0)
			for ; j+8 <= n; j += 8 {
				x := binary.LittleEndian.Uint64(at8(src, j)[:])
				binary.LittleEndian.PutUint64(at8(out, w+1+j)[:], x)
				if m := special(x); m != 0 {
					j += uintptr(bits.TrailingZeros64(m) / 8)
					break
				}
			}
			if j >= n || *(*byte)(unsafe.Add(src, j)) != 0 {
				return w, i
			}
			*(*byte)(unsafe.Add(out, w)) = '"'
			*(*byte)(unsafe.Add(out, w+1+j)) = '"'
			w += j + 2
			continue
		case opEnd:
			continue
		default:
			return w, i
		}
		// An integer's digits.
		neg := uintptr(0)
		if o.kind >= opS8 && int64(v) < 0 {
			*(*byte)(unsafe.Add(out, w)) = '-'
			neg = 1
			v = -v
		}
		w += neg
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
			return w - neg, i // step writes the sign too
		}
	}
	return w, i
}

// step runs a step that run leaves: it appends o's value at out+w (past
// its literal), within the plan's bound, and returns the index after it.
//
//go:noinline
func (p *plan) step(o *bop, out, rec unsafe.Pointer, w uintptr) uintptr {
	dst := unsafe.Slice((*byte)(out), p.max+slack)[:w]
	b := unsafe.Slice((*byte)(rec), p.size)
	switch o.kind {
	case opU64:
		dst = appendUint(dst, binary.NativeEndian.Uint64(b[o.off:]))
	case opS64:
		dst = appendInt(dst, int64(binary.NativeEndian.Uint64(b[o.off:])))
	case opString:
		str := b[o.off : o.off+o.size]
		for k, c := range str {
			if c == 0 {
				str = str[:k]
				break
			}
		}
		dst = appendJSONBytes(dst, str)
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
