package decode

import (
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
		out := []byte("x#####################y")
		if end := putUint(out, 1, v); string(out[:end]) != "x"+strconv.FormatUint(v, 10) || out[len(out)-1] != 'y' {
			t.Fatalf("putUint(%d) = %s", v, out[:end])
		}
	}
	for _, v := range []int64{0, -1, 1, math.MinInt64, math.MaxInt64, -100, -99} {
		if got, want := string(appendInt(nil, v)), strconv.FormatInt(v, 10); got != want {
			t.Fatalf("appendInt(%d) = %s", v, got)
		}
		out := make([]byte, 20)
		if end := putInt(out, 0, v); string(out[:end]) != strconv.FormatInt(v, 10) {
			t.Fatalf("putInt(%d) = %s", v, out[:end])
		}
	}
}
