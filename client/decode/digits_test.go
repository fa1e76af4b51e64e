package decode

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestAppendUint(t *testing.T) {
	vals := []uint64{0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, math.MaxUint32, math.MaxUint64, math.MaxUint64 - 1, 1e19, 1e19 - 1}
	for i := range 64 {
		vals = append(vals, 1<<i, 1<<i-1, 1<<i+1)
	}
	for range 10000 {
		vals = append(vals, rand.Uint64()>>rand.IntN(64))
	}
	for _, v := range vals {
		if got, want := string(appendUint([]byte("x"), v)), "x"+strconv.FormatUint(v, 10); got != want {
			t.Fatalf("appendUint(%d) = %s", v, got)
		}
	}
	for _, v := range []int64{0, -1, 1, math.MinInt64, math.MaxInt64, -100, -99} {
		if got, want := string(appendInt(nil, v)), strconv.FormatInt(v, 10); got != want {
			t.Fatalf("appendInt(%d) = %s", v, got)
		}
	}
}

// TestDigits8 checks the eight-digit SWAR conversion against strconv at
// every decimal length's bounds and at random.
func TestDigits8(t *testing.T) {
	vals := []uint32{0, 99999999}
	for p := uint32(1); p < 1e8; p *= 10 {
		vals = append(vals, p-1, p, p+1, 2*p, 9*p, 10*p-1)
	}
	for range 100000 {
		vals = append(vals, rand.Uint32N(1e8))
	}
	for _, v := range vals {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], digits8(v)+ascii8)
		if want := strconv.FormatUint(uint64(v)+1e8, 10)[1:]; string(b[:]) != want {
			t.Fatalf("digits8(%d) = %q, want %q", v, b, want)
		}
	}
}

func TestDigitCount32(t *testing.T) {
	vals := []uint32{0, 1, 9, 10, 1<<32 - 1}
	for p := uint32(10); p <= 1e9; p *= 10 {
		vals = append(vals, p-1, p, p+1)
	}
	for i := range 32 {
		vals = append(vals, 1<<i, 1<<i-1, 1<<i+1)
	}
	for range 100000 {
		vals = append(vals, rand.Uint32()>>rand.IntN(32))
	}
	for _, v := range vals {
		if got, want := digitCount32(v), uint(len(strconv.FormatUint(uint64(v), 10))); got != want {
			t.Fatalf("digitCount32(%d) = %d, want %d", v, got, want)
		}
	}
}
