package inspect

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func findProgram(t *testing.T, o *Object, name string) Program {
	t.Helper()
	for _, p := range o.Programs {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no program %q in %+v", name, o.Programs)
	return Program{}
}

func TestInspectTracing(t *testing.T) {
	o := inspectFile(t, "tracing")

	if o.License != "Dual BSD/GPL" {
		t.Errorf("License = %q, want %q", o.License, "Dual BSD/GPL")
	}
	if !o.BTF {
		t.Error("BTF = false, want true")
	}

	var names []string
	for _, p := range o.Programs {
		names = append(names, p.Name)
	}
	if want := []string{"count_packets", "handle_exec", "on_switch"}; !slices.Equal(names, want) {
		t.Fatalf("programs = %v, want %v (sorted)", names, want)
	}

	for _, tc := range []struct {
		name, section, typ, attachType, attachTo string
	}{
		{"handle_exec", "tp/sched/sched_process_exec", "TracePoint", "", "sched/sched_process_exec"},
		{"on_switch", "tp_btf/sched_switch", "Tracing", "TraceRawTp", "sched_switch"},
		{"count_packets", "xdp", "XDP", "XDP", ""},
	} {
		p := findProgram(t, o, tc.name)
		got := []string{p.Section, p.Type, p.AttachType, p.AttachTo}
		want := []string{tc.section, tc.typ, tc.attachType, tc.attachTo}
		if !slices.Equal(got, want) {
			t.Errorf("%s: section, type, attach type, attach to = %q, want %q", tc.name, got, want)
		}
		if p.Instructions <= 0 {
			t.Errorf("%s: Instructions = %d, want > 0", tc.name, p.Instructions)
		}
	}

	exec := findProgram(t, o, "handle_exec")
	wantHelpers := []string{
		"bpf_get_current_comm",
		"bpf_get_current_pid_tgid",
		"bpf_get_current_task",
		"bpf_probe_read_kernel", // from BPF_CORE_READ
		"bpf_ringbuf_reserve",
		"bpf_ringbuf_submit",
	}
	if !slices.Equal(exec.Helpers, wantHelpers) {
		t.Errorf("handle_exec helpers = %v, want %v", exec.Helpers, wantHelpers)
	}
	if len(exec.Kfuncs) != 0 {
		t.Errorf("handle_exec kfuncs = %v, want none", exec.Kfuncs)
	}

	// CO-RE: BPF_CORE_READ(task, real_parent, tgid) relocates two field
	// offsets; next->pid in a tp_btf program one; the XDP program none.
	if n := exec.CORERelocations; n != 2 {
		t.Errorf("handle_exec CORERelocations = %d, want 2", n)
	}
	if n := findProgram(t, o, "on_switch").CORERelocations; n != 1 {
		t.Errorf("on_switch CORERelocations = %d, want 1", n)
	}
	if n := findProgram(t, o, "count_packets").CORERelocations; n != 0 {
		t.Errorf("count_packets CORERelocations = %d, want 0", n)
	}
	if o.CORERelocations != 3 {
		t.Errorf("object CORERelocations = %d, want 3", o.CORERelocations)
	}

	wantMaps := []Map{
		{Name: "counts", Type: "Hash", KeySize: 4, ValueSize: 8, MaxEntries: 10240, KeyType: "u32", ValueType: "u64", Export: "counter"},
		{Name: "events", Type: "RingBuf", MaxEntries: 256 * 1024, ExportNote: "a stream of records, not a table",
			// struct event is in BTF as scratch's value type.
			Record: &Record{Type: "struct event", Size: 24, Origin: "inferred", Note: "handle_exec: bpf_ringbuf_reserve of 24 bytes, the size of struct event"}},
		{Name: "pinned", Type: "Hash", KeySize: 4, ValueSize: 4, MaxEntries: 16, Flags: 1 /* BPF_F_NO_PREALLOC */, Pinning: "by_name", KeyType: "u32", ValueType: "u32", Export: "counter"},
		{Name: "scratch", Type: "PerCPUArray", KeySize: 4, ValueSize: 24, MaxEntries: 1, KeyType: "u32", ValueType: "struct event", Export: "counter"}, // its numbers as counters, its strings as labels (client/export)
		{Name: "totals", Type: "Array", KeySize: 4, ValueSize: 8, MaxEntries: 4, KeyType: "u32", ValueType: "u64", Export: "counter"},
	}
	if !reflect.DeepEqual(o.Maps, wantMaps) {
		t.Errorf("maps:\n got %+v\nwant %+v", o.Maps, wantMaps)
		if m := o.Maps[1]; m.Record != nil {
			t.Errorf("events record: %+v", *m.Record)
		}
	}

	wantGlobals := []Global{
		{Name: "dropped", Section: ".bss", Offset: 0, Size: 8, Type: "u64"},
		{Name: "seen", Section: ".data", Offset: 0, Size: 8, Type: "u64"},
		{Name: "cfg", Section: ".data.cfg", Offset: 0, Size: 16, Type: "struct config"},
		{Name: "targ_pid", Section: ".rodata", Offset: 0, Size: 4, Type: "u32", Const: true},
		{Name: "targ_comm", Section: ".rodata", Offset: 4, Size: 16, Type: "char[16]", Const: true},
		{Name: "mode", Section: ".rodata.mode", Offset: 0, Size: 1, Type: "u8", Const: true},
	}
	if !reflect.DeepEqual(o.Globals, wantGlobals) {
		t.Errorf("globals:\n got %+v\nwant %+v", o.Globals, wantGlobals)
	}

	// bpf_probe_read_kernel and bpf_get_current_task are GPL-only, and
	// "Dual BSD/GPL" is GPL-compatible.
	if err := o.Check(); err != nil {
		t.Errorf("Check() = %v, want nil", err)
	}
}

func TestInspectDeterministic(t *testing.T) {
	obj := compile(t, "tracing")
	first, err := Inspect(obj)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(first)
	for range 5 {
		o, err := Inspect(obj)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := json.Marshal(o); string(got) != string(want) {
			t.Fatalf("Inspect is not deterministic:\n%s\n%s", got, want)
		}
	}
}

func TestJSONTags(t *testing.T) {
	b, err := json.Marshal(&Object{
		Programs: []Program{{AttachType: "x", AttachTo: "y"}},
		Maps:     []Map{{Pinning: "by_name"}},
		Globals:  []Global{{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{
		`"license"`, `"programs"`, `"maps"`, `"globals"`, `"core_relocations"`, `"btf"`,
		`"attach_type"`, `"attach_to"`, `"instructions"`, `"helpers"`, `"kfuncs"`,
		`"key_size"`, `"value_size"`, `"max_entries"`, `"flags"`, `"pinning"`,
		`"section"`, `"offset"`, `"size"`, `"type"`, `"const"`,
	} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks key %s", b, key)
		}
	}
}

func TestCheckGPLOnlyHelperMIT(t *testing.T) {
	o := inspectFile(t, "mit")
	if o.License != "MIT" {
		t.Fatalf("License = %q, want MIT", o.License)
	}
	want := []string{
		`program "handle_openat" calls GPL-only helper bpf_probe_read_kernel but the license is "MIT"; declare char LICENSE[] SEC("license") = "GPL";`,
	}
	if got := errorLines(o.Check()); !slices.Equal(got, want) {
		t.Errorf("Check() =\n%q\nwant\n%q", got, want)
	}

	// The same object under a GPL-compatible license is fine.
	o.License = "Dual BSD/GPL"
	if err := o.Check(); err != nil {
		t.Errorf("Check() with Dual BSD/GPL = %v, want nil", err)
	}
}

func TestCheckNoPrograms(t *testing.T) {
	o := inspectFile(t, "noprog")
	if len(o.Programs) != 0 {
		t.Fatalf("programs = %+v, want none", o.Programs)
	}
	if o.License != "GPL" {
		t.Errorf("License = %q, want GPL (read from the ELF without programs)", o.License)
	}
	if len(o.Maps) != 1 || o.Maps[0].Name != "counter" {
		t.Errorf("maps = %+v, want counter", o.Maps)
	}
	want := `object has no BPF programs: put each program in a SEC("...") section`
	if err := o.Check(); err == nil || err.Error() != want {
		t.Errorf("Check() = %v, want %q", err, want)
	}
}

func TestKfuncs(t *testing.T) {
	o := inspectFile(t, "kfunc")
	p := findProgram(t, o, "on_newtask")
	if want := []string{"bpf_task_from_pid", "bpf_task_release"}; !slices.Equal(p.Kfuncs, want) {
		t.Errorf("Kfuncs = %v, want %v", p.Kfuncs, want)
	}
	if len(p.Helpers) != 0 {
		t.Errorf("Helpers = %v, want none (kfuncs are not helpers)", p.Helpers)
	}
	if err := o.Check(); err != nil {
		t.Errorf("Check() = %v, want nil under GPL", err)
	}

	o.License = "Proprietary"
	got := errorLines(o.Check())
	if len(got) != 2 {
		t.Fatalf("Check() = %q, want one error per kfunc", got)
	}
	for i, k := range []string{"bpf_task_from_pid", "bpf_task_release"} {
		if !strings.Contains(got[i], `program "on_newtask" calls kfunc `+k) || !strings.Contains(got[i], `"Proprietary"`) {
			t.Errorf("error %q does not name program, kfunc %s and license", got[i], k)
		}
	}
}

func TestCheckLicenses(t *testing.T) {
	obj := func(license string) *Object {
		return &Object{License: license, Programs: []Program{{
			Name: "p", Type: "TracePoint", Helpers: []string{"bpf_map_lookup_elem", "bpf_trace_printk"},
		}}}
	}
	for _, l := range []string{"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"} {
		if err := obj(l).Check(); err != nil {
			t.Errorf("license %q: Check() = %v, want nil", l, err)
		}
	}
	for _, l := range []string{"", "MIT", "BSD", "gpl", "GPLv2", "Dual BSD/MIT", "Proprietary"} {
		err := obj(l).Check()
		if err == nil || !strings.Contains(err.Error(), "bpf_trace_printk") || strings.Contains(err.Error(), "bpf_map_lookup_elem") {
			t.Errorf("license %q: Check() = %v, want an error about bpf_trace_printk only", l, err)
		}
	}

	if err := obj("").Check(); err == nil || !strings.Contains(err.Error(), "but the object has no license") {
		t.Errorf("no license: Check() = %v, want it to say there is no license", err)
	}

	// bpf_get_stackid is GPL-only except in perf_event programs.
	o := &Object{License: "MIT", Programs: []Program{
		{Name: "pe", Type: "PerfEvent", Helpers: []string{"bpf_get_stackid"}},
		{Name: "tp", Type: "TracePoint", Helpers: []string{"bpf_get_stackid"}},
	}}
	got := errorLines(o.Check())
	if len(got) != 1 || !strings.Contains(got[0], `program "tp"`) {
		t.Errorf("Check() = %q, want one error for program tp", got)
	}
}

func TestInspectInvalid(t *testing.T) {
	_, err := Inspect([]byte("not an ELF object"))
	if err == nil || !strings.HasPrefix(err.Error(), "inspect object: ") {
		t.Errorf("Inspect(garbage) = %v, want an error starting with %q", err, "inspect object: ")
	}
}

func TestHelperName(t *testing.T) {
	for fn, want := range map[asm.BuiltinFunc]string{
		asm.FnMapLookupElem:          "bpf_map_lookup_elem",
		asm.FnProbeReadKernel:        "bpf_probe_read_kernel",
		asm.FnL3CsumReplace:          "bpf_l3_csum_replace",
		asm.FnGetPrandomU32:          "bpf_get_prandom_u32",
		asm.FnSkcToTcp6Sock:          "bpf_skc_to_tcp6_sock",
		asm.FnJiffies64:              "bpf_jiffies64",
		asm.FnTcpRawGenSyncookieIpv4: "bpf_tcp_raw_gen_syncookie_ipv4",
		asm.BuiltinFunc(100000):      "helper#100000",
	} {
		if got := helperName(fn); got != want {
			t.Errorf("helperName(%d) = %q, want %q", uint32(fn), got, want)
		}
	}
}

func TestTypeName(t *testing.T) {
	u32 := &btf.Typedef{Name: "u32", Type: &btf.Int{Name: "unsigned int", Size: 4}}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	for _, tc := range []struct {
		typ  btf.Type
		want string
	}{
		{&btf.Const{Type: &btf.Volatile{Type: u32}}, "u32"},
		{&btf.Array{Type: &btf.Const{Type: char}, Nelems: 16}, "char[16]"},
		{&btf.Array{Type: &btf.Array{Type: u32, Nelems: 3}, Nelems: 2}, "u32[2][3]"},
		{&btf.Pointer{Target: char}, "char *"},
		{&btf.Pointer{Target: &btf.Void{}}, "void *"},
		{&btf.Struct{Name: "config"}, "struct config"},
		{&btf.Struct{}, "struct {...}"},
		{&btf.Union{Name: "u"}, "union u"},
		{&btf.Enum{Name: "state"}, "enum state"},
		{&btf.Float{Name: "double", Size: 8}, "double"},
	} {
		if got := typeName(tc.typ); got != tc.want {
			t.Errorf("typeName(%v) = %q, want %q", tc.typ, got, tc.want)
		}
	}
}

// TestNamesAreData: objects whose program or map names (asm labels) are
// not C identifiers are refused with one line; .rodata and the like pass.
func TestNamesAreData(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"escape_prog", `program name "../../escaped_prog" is not a C identifier`},
		{"escape_map", `map name "../../escaped_map" is not a C identifier`},
	} {
		_, err := Inspect(compile(t, c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line with %q", c.file, err, c.want)
		}
	}
}
