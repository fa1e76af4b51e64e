package decode

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// The JSON a Decoder appends comes from its compiled plan (the bounded
// encoder for most types, the appending one for the rest). These tests
// hold it against two independent encodings of the same record: the node
// tree's (node.appendJSON) and the generic value's (Decode, then
// appendValueJSON), byte for byte, and against encoding/json reading it
// back, over random layouts and records.

// layoutGen builds random BTF types the way clang lays out C: members
// aligned to their size, structs padded to their alignment.
type layoutGen struct {
	rng   *rand.Rand
	names int
}

// name returns a fresh member name, sometimes one that needs escaping in
// JSON (BTF names are anything the object says).
func (g *layoutGen) name() string {
	g.names++
	switch g.rng.IntN(12) {
	case 0:
		return "q\"\\" + strconv.Itoa(g.names)
	case 1:
		return "é\x01" + strconv.Itoa(g.names)
	case 2:
		return "a_rather_long_member_name_for_the_literal_split_" + strconv.Itoa(g.names)
	}
	return "f" + strconv.Itoa(g.names)
}

var intSizes = []uint32{1, 2, 4, 8}

// scalar returns a random leaf type and its alignment.
func (g *layoutGen) scalar() (btf.Type, uint32) {
	r := g.rng
	switch r.IntN(11) {
	case 0, 1:
		n := uint32(1 + r.IntN(24))
		c := &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
		if r.IntN(2) == 0 {
			c = &btf.Int{Name: "unsigned char", Size: 1, Encoding: btf.Char}
		}
		return arr(c, n), 1
	case 2:
		return &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}, 1
	case 3:
		size := intSizes[r.IntN(4)]
		e := &btf.Enum{Name: "e", Size: size, Signed: r.IntN(2) == 0}
		for i := range 1 + r.IntN(5) {
			v := uint64(i)
			if e.Signed && i == 2 {
				v = ^uint64(0) // -1
			}
			name := "E" + strconv.Itoa(i)
			if i == 3 {
				name = "E\"3" // a name to escape
			}
			e.Values = append(e.Values, btf.EnumValue{Name: name, Value: v})
		}
		return e, size
	case 4:
		return &btf.Pointer{Target: &btf.Void{}}, 8
	case 5:
		size := []uint32{4, 8}[r.IntN(2)]
		return &btf.Float{Name: "float", Size: size}, size
	case 6:
		return &btf.Typedef{Name: "t", Type: &btf.Const{Type: &btf.Int{Name: "u", Size: 4}}}, 4
	case 7:
		return &btf.Int{Name: "__int128", Size: 16, Encoding: btf.Signed}, 16
	}
	size := intSizes[r.IntN(4)]
	enc := btf.IntEncoding(0)
	if r.IntN(2) == 0 {
		enc = btf.Signed
	}
	return &btf.Int{Name: "i", Size: size, Encoding: enc}, size
}

// typ returns a random type and its alignment.
func (g *layoutGen) typ(depth int) (btf.Type, uint32) {
	r := g.rng
	if depth < 3 {
		switch r.IntN(8) {
		case 0:
			return g.structOf(depth+1, r.IntN(5) == 0)
		case 1:
			if r.IntN(6) == 0 {
				// Past the unrolling bound.
				size := intSizes[r.IntN(3)]
				return arr(&btf.Int{Name: "i", Size: size}, uint32(100+r.IntN(200))), size
			}
			elem, align := g.typ(depth + 1)
			if _, ok := elem.(*btf.Array); ok {
				break
			}
			return arr(elem, uint32(1+r.IntN(4))), align
		case 2:
			// A log2 histogram.
			m := btf.Member{Name: "slots", Type: arr(&btf.Int{Name: "u32", Size: 4}, uint32(2+r.IntN(30)))}
			size, _ := btf.Sizeof(m.Type)
			return &btf.Struct{Name: "hist", Size: uint32(size), Members: []btf.Member{m}}, 4
		}
	}
	return g.scalar()
}

// structOf returns a random struct (or union) and its alignment.
func (g *layoutGen) structOf(depth int, union bool) (btf.Type, uint32) {
	r := g.rng
	var members []btf.Member
	off, align, size := uint32(0), uint32(1), uint32(0)
	for range 1 + r.IntN(7) {
		t, a := g.typ(depth)
		sz, err := btf.Sizeof(t)
		if err != nil {
			panic(err)
		}
		a = min(a, 8)
		align = max(align, a)
		if !union {
			off = (off + a - 1) / a * a
		}
		m := btf.Member{Name: g.name(), Type: t, Offset: btf.Bits(off * 8)}
		if i, ok := t.(*btf.Int); ok && !union && i.Encoding&btf.Bool == 0 && i.Size <= 8 && r.IntN(6) == 0 {
			m.BitfieldSize = btf.Bits(1 + r.IntN(int(i.Size)*8))
			m.Offset += btf.Bits(r.IntN(int(i.Size)*8 - int(m.BitfieldSize) + 1))
		}
		if r.IntN(10) == 0 {
			if s, ok := t.(*btf.Struct); ok && s.Name != "hist" {
				m.Name = "" // an anonymous struct: its members are the parent's
			}
		}
		members = append(members, m)
		if union {
			size = max(size, uint32(sz))
		} else {
			off += uint32(sz)
			size = off
		}
	}
	size = (size + align - 1) / align * align
	if union {
		return &btf.Union{Name: "u", Size: size, Members: members}, align
	}
	return &btf.Struct{Name: "s", Size: size, Members: members}, align
}

// record fills b with bytes that reach the encoders' corners: random,
// all ones, zero, or drawn from a pool of escapes, multi-byte UTF-8, bad
// UTF-8 and NULs.
func record(r *rand.Rand, b []byte) {
	mode := r.IntN(5)
	for j := range b {
		switch mode {
		case 0:
			b[j] = byte(r.Uint32())
		case 1:
			b[j] = 0xff
		case 2:
			b[j] = 0
		case 3:
			const pool = "ab\"\\\n\x01\x1f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3\x00z<>&"
			b[j] = pool[r.IntN(len(pool))]
		default:
			b[j] = byte('a' + r.IntN(26))
			if r.IntN(8) == 0 {
				b[j] = 0
			}
		}
	}
}

// checkJSON compares d's JSON for b against the tree's and the generic
// value's, and checks that encoding/json reads it back as the value.
func checkJSON(t *testing.T, d *Decoder, b []byte) {
	t.Helper()
	got, err := d.AppendJSON([]byte("pre"), b)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[:3]) != "pre" {
		t.Fatalf("%s: prefix overwritten: %q", d.TypeName(), got)
	}
	got = got[3:]
	if tree := d.root.appendJSON(nil, b, 0); !bytes.Equal(got, tree) {
		t.Fatalf("%s % x:\nplan %s\ntree %s", d.TypeName(), b, got, tree)
	}
	v, err := d.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if val := appendValueJSON(nil, v); !bytes.Equal(got, val) {
		t.Fatalf("%s % x:\nplan  %s\nvalue %s", d.TypeName(), b, got, val)
	}
	// encoding/json: the same document as its own encoding of the value.
	var fromPlan, fromStd any
	std, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(got))
	dec.UseNumber()
	if err := dec.Decode(&fromPlan); err != nil {
		t.Fatalf("%s: invalid JSON %s: %v", d.TypeName(), got, err)
	}
	dec = json.NewDecoder(bytes.NewReader(std))
	dec.UseNumber()
	if err := dec.Decode(&fromStd); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromPlan, fromStd) {
		t.Fatalf("%s: encoding/json reads\n%s\nnot as its own\n%s", d.TypeName(), got, std)
	}
	// With too little room and with room to spare, the same bytes.
	for _, dst := range [][]byte{nil, make([]byte, 0, len(got)), make([]byte, 0, 4*len(got)+64)} {
		if again, _ := d.AppendJSON(dst, b); !bytes.Equal(again, got) {
			t.Fatalf("%s: with cap %d:\n%s\nnot\n%s", d.TypeName(), cap(dst), again, got)
		}
	}
}

// TestJSONDifferential runs checkJSON over random layouts (integers of
// every width and sign, bitfields, bools, enums, pointers, floats, 128-bit
// integers, char arrays, nested and anonymous structs, unions, small and
// large arrays, histograms) and random records.
func TestJSONDifferential(t *testing.T) {
	g := &layoutGen{rng: rand.New(rand.NewPCG(10, 1))}
	bounded := 0
	for range 1500 {
		typ, _ := g.structOf(0, g.rng.IntN(8) == 0)
		d, err := New(typ)
		if err != nil {
			t.Fatalf("%s: %v", TypeName(typ), err)
		}
		if d.Size() > 4096 {
			continue
		}
		if d.flat.max >= 0 {
			bounded++
		}
		b := make([]byte, d.Size())
		for range 8 {
			record(g.rng, b)
			checkJSON(t, d, b)
		}
	}
	if bounded < 500 {
		t.Fatalf("only %d of 1500 layouts ran the bounded encoder", bounded)
	}
}

// FuzzJSON is TestJSONDifferential driven by the fuzzer: the first eight
// bytes choose the layout, the rest fill the record.
func FuzzJSON(f *testing.F) {
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00bench\x00\"\\\n\xc3\xa9"))
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 8 {
			return
		}
		seed := binary.LittleEndian.Uint64(in)
		g := &layoutGen{rng: rand.New(rand.NewPCG(seed, seed>>32))}
		typ, _ := g.structOf(0, seed&7 == 0)
		d, err := New(typ)
		if err != nil {
			t.Fatalf("%s: %v", TypeName(typ), err)
		}
		b := make([]byte, d.Size())
		for i := range b {
			if 8+i < len(in) {
				b[i] = in[8+i]
			}
		}
		checkJSON(t, d, b)
	})
}

// TestJSONIntegerEdges runs checkJSON over integers of every width at the
// bounds of each decimal length and of each type.
func TestJSONIntegerEdges(t *testing.T) {
	var members []btf.Member
	off := uint32(0)
	for _, size := range intSizes {
		for _, enc := range []btf.IntEncoding{0, btf.Signed} {
			members = append(members, member("i"+strconv.Itoa(len(members)), &btf.Int{Name: "i", Size: size, Encoding: enc}, off))
			off += 8 // room for the widest
		}
	}
	d, err := New(&btf.Struct{Name: "ints", Size: off, Members: members})
	if err != nil {
		t.Fatal(err)
	}
	vals := []uint64{0, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for p := uint64(1); p <= 1e19; p *= 10 {
		vals = append(vals, p-1, p, p+1, -p, -(p - 1), -(p + 1))
		if p == 1e19 {
			break
		}
	}
	b := make([]byte, off)
	for _, v := range vals {
		for i := range members {
			binary.NativeEndian.PutUint64(b[8*i:], v)
		}
		checkJSON(t, d, b)
	}
}
