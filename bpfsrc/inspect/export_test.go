package inspect

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// TestExportKind: the build's verdict on each map follows the agent's
// exporter (client/export.NewPlan).
func TestExportKind(t *testing.T) {
	u32 := &btf.Int{Name: "u32", Size: 4}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
	comm := &btf.Array{Index: u32, Type: char, Nelems: 16}
	hist := &btf.Struct{Name: "hist", Size: 16, Members: []btf.Member{{Name: "slots", Type: &btf.Array{Index: u32, Type: u32, Nelems: 4}}}}
	named := &btf.Struct{Name: "named", Size: 16, Members: []btf.Member{{Name: "comm", Type: comm}}}
	withName := &btf.Struct{Name: "with_name", Size: 20, Members: []btf.Member{{Name: "n", Type: u32}, {Name: "comm", Type: comm, Offset: 32}}}
	for _, c := range []struct {
		spec       *ebpf.MapSpec
		kind, note string
	}{
		{&ebpf.MapSpec{Type: ebpf.Hash, Key: u32, Value: u32}, "counter", ""},
		{&ebpf.MapSpec{Type: ebpf.PerCPUArray, Key: u32, Value: withName}, "counter", ""},
		{&ebpf.MapSpec{Type: ebpf.Array, Key: u32, Value: hist}, "histogram", ""},
		{&ebpf.MapSpec{Type: ebpf.Hash, Key: u32, Value: named}, "", "its value struct named has no numeric field"},
		{&ebpf.MapSpec{Type: ebpf.Hash, Key: hist, Value: u32}, "", "its key holds a log2 histogram, which cannot label series"},
		{&ebpf.MapSpec{Type: ebpf.Hash}, "", "no BTF for its key and value"},
		{&ebpf.MapSpec{Type: ebpf.PerfEventArray}, "", "PerfEventArray maps are not exported"},
	} {
		kind, note := exportKind(c.spec)
		if kind != c.kind || note != c.note {
			t.Errorf("%v %v → %v: %q, %q; want %q, %q", c.spec.Type, c.spec.Key, c.spec.Value, kind, note, c.kind, c.note)
		}
	}
}
