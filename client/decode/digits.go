package decode

import "math/bits"

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

// digitCounts[b] turns a 32-bit value whose highest set bit is b into its
// number of decimal digits: (x + digitCounts[b]) >> 32 (Lemire's table).
var digitCounts = func() (t [32]uint64) {
	for b := range t {
		d := uint64(decimalDigits(1 << b)) // of the least value with bit b
		t[b] = d << 32
		if p := pow10[d]; p < 1<<(b+1) {
			t[b] += 1<<32 - p // carries into the count from p on
		}
	}
	return t
}()

// digitCount32 returns the number of decimal digits of x (1 for 0),
// without depending on a chain of divisions.
func digitCount32(x uint32) uint {
	return uint((uint64(x) + digitCounts[bits.Len32(x|1)-1]) >> 32)
}

// digits8 returns v (< 1e8) as eight decimal digits, leading zeros
// included, one a byte (values 0 to 9), the most significant in the
// lowest byte: all eight at once in a 64-bit word (SWAR), with
// multiplications by reciprocals instead of divisions.
func digits8(v uint32) uint64 {
	// Two lanes of 32 bits: the high four digits and the low four.
	x := uint64(v/10000) | uint64(v%10000)<<32
	// Each lane by 100 (x*10486>>20 is x/100 for x < 43700): four lanes
	// of 16 bits, two digits each.
	hi := (x * 10486 >> 20) & (0x7f<<32 | 0x7f)
	x = (x-100*hi)<<16 | hi
	// Each 16-bit lane by 10 (x*103>>10 is x/10 for x < 179).
	hi = (x * 103 >> 10) & (0xf<<48 | 0xf<<32 | 0xf<<16 | 0xf)
	return (x-10*hi)<<8 | hi
}

// ascii8 is '0' in each byte.
const ascii8 = 0x3030303030303030
