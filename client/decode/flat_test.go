package decode

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestPlanMatchesTree checks that the flat JSON plan (bounded, by index,
// or not) appends exactly what the node tree does, for random records
// (random strings hit every escape and invalid UTF-8; random integers the
// extremes), after existing bytes of dst and with too little capacity.
func TestPlanMatchesTree(t *testing.T) {
	s8 := &btf.Int{Name: "signed char", Size: 1, Encoding: btf.Signed}
	u16 := &btf.Int{Name: "unsigned short", Size: 2}
	s16 := &btf.Int{Name: "short", Size: 2, Encoding: btf.Signed}
	s64 := &btf.Int{Name: "long long", Size: 8, Encoding: btf.Signed}
	ints := &btf.Struct{Name: "ints", Size: 48, Members: []btf.Member{
		member("a", u8, 0), member("b", s8, 1), member("c", u16, 2), member("d", s16, 4),
		member("e", u32, 8), member("f", s32, 12), member("g", u64, 16), member("h", s64, 24),
		member("a_rather_long_field_name_over_16", arr(char, 3), 32), member("z", arr(u16, 2), 36), member("q", arr(s8, 8), 40),
	}}
	types := map[string]btf.Type{"event": obsEventType(), "bitfields": eventType(), "ints": ints, "string": arr(char, 16)}
	rng := rand.New(rand.NewPCG(1, 2))
	for name, typ := range types {
		d, err := New(typ)
		if err != nil {
			t.Fatal(err)
		}
		if name != "bitfields" && d.flat.max < 0 {
			t.Fatalf("%s: plan unbounded", name)
		}
		b := make([]byte, d.Size())
		for i := range 20000 {
			for j := range b {
				switch {
				case i%4 == 0:
					b[j] = byte(rng.Uint32())
				case i%4 == 1:
					b[j] = 0xff
				case i%4 == 2:
					b[j] = 0
					if j%8 == 7 {
						b[j] = 0x80
					}
				default:
					const pool = "ab\"\\\n\x01\xc3\xa9\xe2\x82\xac\x00z"
					b[j] = pool[rng.IntN(len(pool))]
				}
			}
			want := d.root.appendJSON([]byte("x"), b, 0)
			got, err := d.AppendJSON([]byte("x"), b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s % x:\n got %s\nwant %s", name, b, got, want)
			}
			prefix := bytes.Repeat([]byte("y"), 100)
			got, _ = d.AppendJSON(prefix[:3:len(prefix)], b)
			if !bytes.Equal(got[3:], want[1:]) || string(got[:3]) != "yyy" {
				t.Fatalf("%s after a prefix: %s", name, got)
			}
		}
	}
}
