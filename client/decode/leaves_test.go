package decode

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
)

var (
	tU32  = &btf.Int{Name: "u32", Size: 4}
	tS16  = &btf.Int{Name: "s16", Size: 2, Encoding: btf.Signed}
	tU64  = &btf.Int{Name: "u64", Size: 8}
	tChar = &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
)

// key: struct { u32 pid; struct { s16 dev; enum op op; } io; char comm[4]; }
func leafKey() *btf.Struct {
	op := &btf.Enum{Name: "op", Size: 4, Values: []btf.EnumValue{{Name: "READ", Value: 0}, {Name: "WRITE", Value: 1}}}
	inner := &btf.Struct{Name: "io", Size: 8, Members: []btf.Member{{Name: "dev", Type: tS16}, {Name: "op", Type: op, Offset: 32}}}
	return &btf.Struct{Name: "key", Size: 16, Members: []btf.Member{
		{Name: "pid", Type: tU32},
		{Name: "io", Type: inner, Offset: 32},
		{Name: "comm", Type: &btf.Array{Index: tU32, Type: tChar, Nelems: 4}, Offset: 96},
	}}
}

func TestLeaves(t *testing.T) {
	d, err := New(leafKey())
	if err != nil {
		t.Fatal(err)
	}
	ls := d.Leaves()
	want := []struct {
		path string
		kind LeafKind
	}{{"pid", LeafNumber}, {"io.dev", LeafNumber}, {"io.op", LeafEnum}, {"comm", LeafString}}
	if len(ls) != len(want) {
		t.Fatalf("leaves: %+v", ls)
	}
	b := make([]byte, 16)
	binary.NativeEndian.PutUint32(b, 42)
	binary.NativeEndian.PutUint16(b[4:], uint16(0xfffe)) // -2
	binary.NativeEndian.PutUint32(b[8:], 1)
	copy(b[12:], "sh\x00x")
	texts := []string{"42", "-2", "WRITE", "sh"}
	floats := []float64{42, -2, 1, 0}
	for i, l := range ls {
		if l.Path != want[i].path || l.Kind != want[i].kind {
			t.Errorf("leaf %d: %s %d, want %s %d", i, l.Path, l.Kind, want[i].path, want[i].kind)
		}
		if got := string(l.AppendText(nil, b)); got != texts[i] {
			t.Errorf("leaf %s: text %q, want %q", l.Path, got, texts[i])
		}
		if got := l.Float(b); got != floats[i] {
			t.Errorf("leaf %s: float %v, want %v", l.Path, got, floats[i])
		}
	}

	// A scalar is its own leaf, with an empty path.
	d, _ = New(tU64)
	if ls := d.Leaves(); len(ls) != 1 || ls[0].Path != "" || ls[0].Kind != LeafNumber {
		t.Fatalf("scalar leaves: %+v", ls)
	}

	// A libbpf-tools histogram: struct hist { u32 slots[4]; char comm[4]; }.
	hist := &btf.Struct{Name: "hist", Size: 20, Members: []btf.Member{
		{Name: "slots", Type: &btf.Array{Index: tU32, Type: tU32, Nelems: 4}},
		{Name: "comm", Type: &btf.Array{Index: tU32, Type: tChar, Nelems: 4}, Offset: 128},
	}}
	d, _ = New(hist)
	ls = d.Leaves()
	if len(ls) != 2 || ls[0].Kind != LeafHistogram || ls[0].Slots() != 4 || ls[1].Kind != LeafString {
		t.Fatalf("histogram leaves: %+v", ls)
	}
	b = make([]byte, 20)
	for i := range 4 {
		binary.NativeEndian.PutUint32(b[4*i:], uint32(10*i+1))
	}
	for i := range 4 {
		if got := ls[0].Slot(b, i); got != uint64(10*i+1) {
			t.Errorf("slot %d: %d", i, got)
		}
	}
}

// TestMapTypes: the key and value types of a real map, from the kernel.
func TestMapTypes(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("creating BPF maps needs root on Linux")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: 8, MaxEntries: 4, Key: leafKey(),
		Value: &btf.Typedef{Name: "count_t", Type: tU64}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, value, err := MapTypes(m)
	if err != nil {
		t.Fatal(err)
	}
	if TypeName(key) != "struct key" || TypeName(value) != "count_t" {
		t.Fatalf("types: %s %s", TypeName(key), TypeName(value))
	}
	d, err := New(key)
	if err != nil || len(d.Leaves()) != 4 {
		t.Fatalf("decoder of the kernel's key type: %v", err)
	}

	plain, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, _, err := MapTypes(plain); !errors.Is(err, ErrNoBTF) {
		t.Fatalf("a map without BTF: %v", err)
	}
}
