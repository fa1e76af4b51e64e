package decode

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

var (
	u8    = &btf.Int{Name: "unsigned char", Size: 1}
	char  = &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
	u32   = &btf.Int{Name: "unsigned int", Size: 4}
	s32   = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u64   = &btf.Int{Name: "unsigned long long", Size: 8}
	boolT = &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}
)

func arr(t btf.Type, n uint32) *btf.Array { return &btf.Array{Index: u32, Type: t, Nelems: n} }

func member(name string, t btf.Type, off uint32) btf.Member {
	return btf.Member{Name: name, Type: t, Offset: btf.Bits(off * 8)}
}

// eventType is
//
//	enum state { RUNNING = 0, SLEEPING = 1, DEAD = -1 };
//	struct inner { u32 a; u8 b[2]; };
//	struct event {
//		int pid; char comm[8]; enum state st; struct inner in;
//		u32 flags:3, mode:5; _Bool ok; u64 ts;
//	};
func eventType() *btf.Struct {
	state := &btf.Enum{Name: "state", Size: 4, Signed: true, Values: []btf.EnumValue{
		{Name: "RUNNING", Value: 0}, {Name: "SLEEPING", Value: 1}, {Name: "DEAD", Value: ^uint64(0)},
	}}
	inner := &btf.Struct{Name: "inner", Size: 8, Members: []btf.Member{
		member("a", u32, 0), member("b", arr(u8, 2), 4),
	}}
	return &btf.Struct{Name: "event", Size: 40, Members: []btf.Member{
		member("pid", &btf.Typedef{Name: "pid_t", Type: s32}, 0),
		member("comm", arr(char, 8), 4),
		member("st", &btf.Const{Type: state}, 12),
		member("in", inner, 16),
		{Name: "flags", Type: u32, Offset: 24 * 8, BitfieldSize: 3},
		{Name: "mode", Type: u32, Offset: 24*8 + 3, BitfieldSize: 5},
		member("ok", boolT, 28),
		member("ts", u64, 32),
	}}
}

func eventBytes(pid int32, comm string, st int32) []byte {
	b := make([]byte, 40)
	binary.NativeEndian.PutUint32(b[0:], uint32(pid))
	copy(b[4:12], comm)
	binary.NativeEndian.PutUint32(b[12:], uint32(st))
	binary.NativeEndian.PutUint32(b[16:], 7)
	b[20], b[21] = 1, 2
	binary.NativeEndian.PutUint32(b[24:], 5|(17<<3))
	b[28] = 1
	binary.NativeEndian.PutUint64(b[32:], 1<<40)
	return b
}

func TestDecodeStruct(t *testing.T) {
	d, err := New(eventType())
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != 40 || d.TypeName() != "struct event" || d.Histogram() {
		t.Fatalf("size %d name %q hist %v", d.Size(), d.TypeName(), d.Histogram())
	}
	b := eventBytes(-3, "bash\x00xx", -1)
	v, err := d.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Struct{
		{"pid", int64(-3)},
		{"comm", "bash"},
		{"st", "DEAD"},
		{"in", Struct{{"a", uint64(7)}, {"b", []any{uint64(1), uint64(2)}}}},
		{"flags", uint64(5)},
		{"mode", uint64(17)},
		{"ok", true},
		{"ts", uint64(1 << 40)},
	}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("got %#v\nwant %#v", v, want)
	}

	js, err := d.AppendJSON(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"pid":-3,"comm":"bash","st":"DEAD","in":{"a":7,"b":[1,2]},"flags":5,"mode":17,"ok":true,"ts":1099511627776}`
	if string(js) != wantJSON {
		t.Fatalf("JSON %s\nwant %s", js, wantJSON)
	}
	// The generic value encodes the same.
	gen, err := json.Marshal(v)
	if err != nil || string(gen) != wantJSON {
		t.Fatalf("generic JSON %s (%v)", gen, err)
	}

	// An enum value without a name is its number.
	v, _ = d.Decode(eventBytes(1, "x", 42))
	if st, _ := v.(Struct).Get("st"); st != int64(42) {
		t.Fatalf("unnamed enum: %#v", st)
	}

	tab := NewTable(d)
	if h := tab.Header(); !strings.HasPrefix(h, "PID ") || !strings.Contains(h, "COMM") || !strings.HasSuffix(h, "TS\n") {
		t.Fatalf("header %q", h)
	}
	row, err := tab.AppendRow(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(row)); !reflect.DeepEqual(f, []string{"-3", "bash", "DEAD", "{a=7", "b=[1", "2]}", "5", "17", "true", "1099511627776"}) {
		t.Fatalf("row %q", row)
	}
}

func TestStringEscapes(t *testing.T) {
	d, err := New(arr(char, 8))
	if err != nil {
		t.Fatal(err)
	}
	js, err := d.AppendJSON(nil, []byte("a\"\n\xff\x01b\x00z"))
	if err != nil {
		t.Fatal(err)
	}
	var s string
	if err := json.Unmarshal(js, &s); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	if s != "a\"\n\ufffd\x01b" {
		t.Fatalf("%q", s)
	}
	txt, _ := d.AppendText(nil, []byte("a\x1b[2Jb\x00\x00"))
	if string(txt) != "a.[2Jb" {
		t.Fatalf("text %q", txt)
	}
}

func TestSizeMismatch(t *testing.T) {
	d, err := New(eventType())
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Decode(make([]byte, 39))
	var se *SizeError
	if !errors.As(err, &se) || !errors.Is(err, ErrSize) || se.Want != 40 || se.Got != 39 {
		t.Fatalf("got %v", err)
	}
	if _, err := d.AppendJSON(nil, make([]byte, 41)); !errors.Is(err, ErrSize) {
		t.Fatalf("got %v", err)
	}
	if _, err := NewTable(d).AppendRow(nil, nil); !errors.Is(err, ErrSize) {
		t.Fatalf("got %v", err)
	}
}

func histType() *btf.Struct {
	return &btf.Struct{Name: "hist", Size: 26*4 + 16, Members: []btf.Member{
		member("slots", arr(u32, 26), 0),
		member("comm", arr(char, 16), 26*4),
	}}
}

func TestHistogram(t *testing.T) {
	d, err := New(histType())
	if err != nil {
		t.Fatal(err)
	}
	if !d.Histogram() {
		t.Fatal("not a histogram")
	}
	b := make([]byte, d.Size())
	binary.NativeEndian.PutUint32(b[0:], 1)
	binary.NativeEndian.PutUint32(b[4*3:], 8)
	binary.NativeEndian.PutUint32(b[4*4:], 4)
	copy(b[26*4:], "cat")
	v, err := d.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v.(Struct).Get("slots")
	hist := h.(Histogram)
	want := []Bucket{{0, 1, 1}, {2, 3, 0}, {4, 7, 0}, {8, 15, 8}, {16, 31, 4}}
	if !reflect.DeepEqual(hist.Buckets(), want) || hist.Total() != 13 {
		t.Fatalf("buckets %v total %d", hist.Buckets(), hist.Total())
	}
	js, _ := d.AppendJSON(nil, b)
	const wantJSON = `{"slots":[{"low":0,"high":1,"count":1},{"low":2,"high":3,"count":0},{"low":4,"high":7,"count":0},{"low":8,"high":15,"count":8},{"low":16,"high":31,"count":4}],"comm":"cat"}`
	if string(js) != wantJSON {
		t.Fatalf("JSON %s", js)
	}
	chart := string(AppendHistogram(nil, hist, "usecs"))
	const wantChart = "" +
		"     usecs               : count    distribution\n" +
		"         0 -> 1          : 1        |*****                                   |\n" +
		"         2 -> 3          : 0        |                                        |\n" +
		"         4 -> 7          : 0        |                                        |\n" +
		"         8 -> 15         : 8        |****************************************|\n" +
		"        16 -> 31         : 4        |********************                    |\n"
	if chart != wantChart {
		t.Fatalf("chart:\n%s\nwant:\n%s", chart, wantChart)
	}
	if out := AppendHistogram(nil, Histogram{Slots: make([]uint64, 4)}, "x"); len(out) != 0 {
		t.Fatalf("empty histogram printed %q", out)
	}
	var sum Histogram
	sum.Add(hist)
	sum.Add(hist)
	if sum.Total() != 26 {
		t.Fatalf("sum %d", sum.Total())
	}
}

func TestSlotRange(t *testing.T) {
	for i, want := range [][2]uint64{{0, 1}, {2, 3}, {4, 7}, {8, 15}} {
		if l, h := SlotRange(i); l != want[0] || h != want[1] {
			t.Errorf("slot %d: %d..%d", i, l, h)
		}
	}
	if l, h := SlotRange(63); l != 1<<63 || h != 1<<64-1 {
		t.Errorf("slot 63: %d..%d", l, h)
	}
}

func TestDatasecAndUnion(t *testing.T) {
	ds := &btf.Datasec{Name: ".bss", Size: 12, Vars: []btf.VarSecinfo{
		{Type: &btf.Var{Name: "hits", Type: u64}, Offset: 0, Size: 8},
		{Type: &btf.Var{Name: "last", Type: s32}, Offset: 8, Size: 4},
	}}
	d, err := New(ds)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 12)
	b[0] = 9
	binary.NativeEndian.PutUint32(b[8:], uint32(0xffffffff))
	js, _ := d.AppendJSON(nil, b)
	if string(js) != `{"hits":9,"last":-1}` {
		t.Fatalf("%s", js)
	}
	u := &btf.Union{Name: "u", Size: 4, Members: []btf.Member{member("i", s32, 0), member("c", arr(char, 4), 0)}}
	anon := &btf.Struct{Name: "outer", Size: 8, Members: []btf.Member{member("x", u32, 0), {Name: "", Type: u, Offset: 32}}}
	d, err = New(anon)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte{1, 0, 0, 0, 'h', 'i', 0, 0}
	js, _ = d.AppendJSON(nil, b)
	if string(js) != `{"x":1,"i":26984,"c":"hi"}` {
		t.Fatalf("%s", js)
	}
}

func TestUnsized(t *testing.T) {
	if _, err := New(&btf.Void{}); err == nil {
		t.Fatal("void decoded")
	}
	if _, err := New(nil); err == nil {
		t.Fatal("nil decoded")
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	d, err := New(eventType())
	if err != nil {
		b.Fatal(err)
	}
	rec := eventBytes(42, "bench", 1)
	buf := make([]byte, 0, 512)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = d.AppendJSON(buf[:0], rec)
	}
}

// obsEventType is the record of client/observe's BenchmarkEvents:
//
//	struct event { __u32 seq; __u32 cpu; __u64 ts; char comm[16]; __s32 ret; __u32 flags; };
func obsEventType() *btf.Struct {
	return &btf.Struct{Name: "event", Size: 40, Members: []btf.Member{
		member("seq", u32, 0), member("cpu", u32, 4), member("ts", u64, 8),
		member("comm", arr(char, 16), 16), member("ret", s32, 32), member("flags", u32, 36),
	}}
}

func obsEventBytes(seq uint32, ts uint64, comm string, ret int32) []byte {
	b := make([]byte, 40)
	binary.NativeEndian.PutUint32(b[0:], seq)
	binary.NativeEndian.PutUint32(b[4:], 1)
	binary.NativeEndian.PutUint64(b[8:], ts)
	copy(b[16:32], comm)
	binary.NativeEndian.PutUint32(b[32:], uint32(ret))
	return b
}

func BenchmarkAppendJSONEvent(b *testing.B) {
	d, err := New(obsEventType())
	if err != nil {
		b.Fatal(err)
	}
	rec := obsEventBytes(123456, 8123456789012, "bench", -1)
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = d.AppendJSON(buf[:0], rec)
	}
}
