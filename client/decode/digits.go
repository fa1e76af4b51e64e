package decode

import (
	"encoding/binary"
	"math/bits"
)

// Integer formatting straight into the output, without strconv's scratch
// buffer and copy: the JSON plan formats a few integers per record.

const smallDigits = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// decimalDigits returns the number of decimal digits of v (1 for 0).
func decimalDigits(v uint64) int {
	t := (bits.Len64(v) * 1233) >> 12 // ≈ log10(2) × bits
	if t < len(pow10) && v >= pow10[t] {
		t++
	}
	return max(t, 1)
}

// appendUint appends v in decimal.
func appendUint(dst []byte, v uint64) []byte {
	if v < 10 {
		return append(dst, byte('0'+v))
	}
	n := decimalDigits(v)
	l := len(dst)
	if cap(dst)-l < n {
		dst = append(dst, make([]byte, n)...)
	} else {
		dst = dst[:l+n]
	}
	i := l + n
	for v >= 100 {
		q := v / 100
		r := (v - q*100) * 2
		i -= 2
		dst[i], dst[i+1] = smallDigits[r], smallDigits[r+1]
		v = q
	}
	if v >= 10 {
		dst[i-2], dst[i-1] = smallDigits[v*2], smallDigits[v*2+1]
	} else {
		dst[i-1] = byte('0' + v)
	}
	return dst
}

// appendInt appends v in decimal.
func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendUint(append(dst, '-'), uint64(-v))
	}
	return appendUint(dst, uint64(v))
}

// digitPairs[n] is n's two decimal digits (n < 100) as a little-endian
// word, stored whole.
var digitPairs = func() (t [100]uint16) {
	for n := range t {
		t[n] = uint16('0'+n/10) | uint16('0'+n%10)<<8
	}
	return t
}()

// putUint writes v in decimal at out[w:], which has room for it, and
// returns the index after it. Eight digits at a time in 32-bit arithmetic,
// two by two as word stores.
func putUint(out []byte, w int, v uint64) int {
	if v < 10 {
		out[w] = byte('0' + v)
		return w + 1
	}
	end := w + decimalDigits(v)
	i := end
	for v >= 1e8 {
		q := v / 1e8
		r := uint32(v - q*1e8)
		hi, lo := r/1e4, r%1e4
		i -= 8
		binary.LittleEndian.PutUint64(out[i:], uint64(digitPairs[hi/100])|uint64(digitPairs[hi%100])<<16|
			uint64(digitPairs[lo/100])<<32|uint64(digitPairs[lo%100])<<48)
		v = q
	}
	u := uint32(v)
	for u >= 100 {
		q := u / 100
		i -= 2
		binary.LittleEndian.PutUint16(out[i:], digitPairs[u-q*100])
		u = q
	}
	if u >= 10 {
		binary.LittleEndian.PutUint16(out[i-2:], digitPairs[u])
	} else {
		out[i-1] = byte('0' + u)
	}
	return end
}

// putInt writes v in decimal at out[w:], which has room for it, and
// returns the index after it.
func putInt(out []byte, w int, v int64) int {
	if v < 0 {
		out[w] = '-'
		return putUint(out, w+1, uint64(-v))
	}
	return putUint(out, w, uint64(v))
}
