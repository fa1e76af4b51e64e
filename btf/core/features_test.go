package core

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfarm/bpfarm/internal/testenv"
)

// norm reduces a name to lower-case letters and digits, to compare
// cilium/ebpf's Go names (RingBuf, FnRingbufOutput) with UAPI names.
func norm(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return -1
	}, s)
}

// TestUAPINames checks the generated UAPI name tables value by value
// against cilium/ebpf's own constants for the same values: the kernel's
// BPF_MAP_TYPE_RINGBUF is cilium/ebpf's RingBuf, BPF_FUNC_ringbuf_output
// its FnRingbufOutput, and so on for every value both know.
func TestUAPINames(t *testing.T) {
	// Names that differ in more than spelling, the same values.
	aliases := map[string]string{
		"BPF_MAP_TYPE_STRUCT_OPS":      "StructOpsMap",
		"BPF_MAP_TYPE_SOCKHASH":        "SockHash",
		"BPF_MAP_TYPE_CGRP_STORAGE":    "CgroupStorage",
		"BPF_MAP_TYPE_CGROUP_STORAGE":  "CGroupStorage",
		"BPF_CGROUP_INET_INGRESS":      "None", // AttachNone, the same value: 0
		"BPF_TRACE_ITER":               "AttachTraceIter",
		"BPF_LSM_MAC":                  "AttachLSMMac",
		"BPF_MODIFY_RETURN":            "AttachModifyReturn",
		"BPF_XDP":                      "AttachXDP",
		"BPF_PROG_TYPE_RAW_TRACEPOINT": "RawTracepoint",
		"BPF_PROG_TYPE_CGROUP_SOCKOPT": "CGroupSockopt",
		"BPF_MAP_TYPE_LRU_PERCPU_HASH": "LRUCPUHash",
		"BPF_MAP_TYPE_PROG_ARRAY":      "ProgramArray",
	}
	check := func(kind string, table map[uint32]string, goName func(uint32) string, trim string) {
		t.Helper()
		n := 0
		for v, name := range table {
			g := goName(v)
			if g == "" || strings.Contains(g, "(") {
				continue // a value cilium/ebpf doesn't know
			}
			n++
			if a, ok := aliases[name]; ok && a == g {
				continue
			}
			want := norm(strings.TrimPrefix(name, trim))
			got := norm(strings.TrimPrefix(strings.TrimPrefix(g, "Fn"), "Attach"))
			if want != got && !strings.Contains(got, want) && !strings.Contains(want, got) {
				t.Errorf("%s %d: table %s, cilium/ebpf %s", kind, v, name, g)
			}
		}
		if n < 10 {
			t.Errorf("%s: only %d values compared", kind, n)
		}
	}
	check("map type", uapiMapTypes, func(v uint32) string { return ebpf.MapType(v).String() }, "BPF_MAP_TYPE_")
	check("program type", uapiProgTypes, func(v uint32) string { return ebpf.ProgramType(v).String() }, "BPF_PROG_TYPE_")
	check("attach type", uapiAttachTypes, func(v uint32) string { return ebpf.AttachType(v).String() }, "BPF_")
	check("helper", uapiHelpers, func(v uint32) string { return asm.BuiltinFunc(v).String() }, "BPF_FUNC_")

	for _, c := range []struct {
		table map[uint32]string
		v     uint32
		want  string
	}{
		{uapiMapTypes, uint32(ebpf.RingBuf), "BPF_MAP_TYPE_RINGBUF"},
		{uapiMapTypes, uint32(ebpf.PerfEventArray), "BPF_MAP_TYPE_PERF_EVENT_ARRAY"},
		{uapiMapTypes, uint32(ebpf.Hash), "BPF_MAP_TYPE_HASH"},
		{uapiProgTypes, uint32(ebpf.SchedCLS), "BPF_PROG_TYPE_SCHED_CLS"},
		{uapiProgTypes, uint32(ebpf.Tracing), "BPF_PROG_TYPE_TRACING"},
		{uapiAttachTypes, uint32(ebpf.AttachTCXIngress), "BPF_TCX_INGRESS"},
		{uapiAttachTypes, uint32(ebpf.AttachTCXEgress), "BPF_TCX_EGRESS"},
		{uapiAttachTypes, uint32(ebpf.AttachTraceFEntry), "BPF_TRACE_FENTRY"},
		{uapiHelpers, uint32(asm.FnRingbufOutput), "BPF_FUNC_ringbuf_output"},
		{uapiHelpers, uint32(asm.FnMapLookupElem), "BPF_FUNC_map_lookup_elem"},
		{uapiHelpers, uint32(asm.FnGetCurrentPidTgid), "BPF_FUNC_get_current_pid_tgid"},
	} {
		if got := c.table[c.v]; got != c.want {
			t.Errorf("value %d: %q, want %q", c.v, got, c.want)
		}
	}
}

// TestNeedReason checks the one-line reasons.
func TestNeedReason(t *testing.T) {
	for _, c := range []struct {
		n    Need
		want string
	}{
		{Need{Kind: NeedMapType, Name: "BPF_MAP_TYPE_RINGBUF", Map: "events"}, "map events: ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel"},
		{Need{Kind: NeedMapType, Name: "BPF_MAP_TYPE_HASH_OF_MAPS", Map: "outer"}, "map outer: hash of maps (BPF_MAP_TYPE_HASH_OF_MAPS) is not in this kernel"},
		{Need{Kind: NeedProgramType, Name: "BPF_PROG_TYPE_NETFILTER"}, "program type netfilter (BPF_PROG_TYPE_NETFILTER) is not in this kernel"},
		{Need{Kind: NeedAttachType, Name: "BPF_TCX_INGRESS"}, "attach type BPF_TCX_INGRESS is not in this kernel"},
		{Need{Kind: NeedHelper, Name: "BPF_FUNC_ringbuf_output"}, "helper bpf_ringbuf_output (BPF_FUNC_ringbuf_output) is not in this kernel"},
	} {
		if got := c.n.Reason(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.n, got, c.want)
		}
	}
	got := unsupportedReasons(nil, []Target{
		{TargetKfunc, "bpf_a", TargetMissing}, {TargetKfunc, "bpf_b", TargetMissing}, {TargetKfunc, "bpf_c", TargetPresent},
		{TargetTracepoint, "sched_x", TargetMissing}, {TargetFunction, "kfn", TargetUnknown},
	}, func(name string) bool { return name != "bpf_b" })
	want := []string{"kfunc bpf_a is not in this kernel", "tracepoint sched_x is not in this kernel"}
	if !slices.Equal(got, want) {
		t.Errorf("reasons %q, want %q", got, want)
	}
}

// sectionsSource has one program per section kind whose program and
// attach types the report derives.
const sectionsSource = `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
#define P(sec, name) SEC(sec) int p_##name(void *ctx) { return 0; }
P("tcx/ingress", tcx_in)
P("tcx/egress", tcx_eg)
P("tc/ingress", tc_in)
P("tc", tc_legacy)
P("classifier", classifier)
P("xdp", xdp)
P("xdp/devmap", xdp_devmap)
P("socket", socket)
P("kprobe/do_nanosleep", kprobe)
P("kprobe.multi/do_*", kprobe_multi)
P("uprobe//bin/true:main", uprobe)
P("tp/sched/sched_switch", tp)
P("raw_tp/sched_switch", raw_tp)
P("tp_btf/sched_switch", tp_btf)
P("fentry/do_nanosleep", fentry)
P("fexit/do_nanosleep", fexit)
P("lsm/file_open", lsm)
P("iter/task", iter)
P("cgroup/connect4", connect4)
P("cgroup_skb/ingress", cgroup_skb)
P("cgroup/sock_create", sock_create)
P("sockops", sockops)
P("sk_msg", sk_msg)
P("netkit/primary", netkit)
P("netfilter", netfilter)
P("perf_event", perf_event)
P("syscall", syscall_prog)
`

// TestSectionNeeds checks the program and attach types derived from ELF
// sections (libbpf's table, as cilium/ebpf applies it), compiled with the
// real clang.
func TestSectionNeeds(t *testing.T) {
	f := setup(t)
	src := filepath.Join(t.TempDir(), "sections.bpf.c")
	if err := os.WriteFile(src, []byte(sectionsSource), 0o644); err != nil {
		t.Fatal(err)
	}
	out := src + ".o"
	if _, err := run(f.clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I"+f.dir, "-c", src, "-o", out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	o, err := LoadObject(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"tcx_in":       {"BPF_PROG_TYPE_SCHED_CLS", "BPF_TCX_INGRESS"},
		"tcx_eg":       {"BPF_PROG_TYPE_SCHED_CLS", "BPF_TCX_EGRESS"},
		"tc_in":        {"BPF_PROG_TYPE_SCHED_CLS", "BPF_TCX_INGRESS"},
		"tc_legacy":    {"BPF_PROG_TYPE_SCHED_CLS", ""},
		"classifier":   {"BPF_PROG_TYPE_SCHED_CLS", ""},
		"xdp":          {"BPF_PROG_TYPE_XDP", ""}, // BPF_XDP is optional
		"xdp_devmap":   {"BPF_PROG_TYPE_XDP", "BPF_XDP_DEVMAP"},
		"socket":       {"BPF_PROG_TYPE_SOCKET_FILTER", ""},
		"kprobe":       {"BPF_PROG_TYPE_KPROBE", ""},
		"kprobe_multi": {"BPF_PROG_TYPE_KPROBE", "BPF_TRACE_KPROBE_MULTI"},
		"uprobe":       {"BPF_PROG_TYPE_KPROBE", ""},
		"tp":           {"BPF_PROG_TYPE_TRACEPOINT", ""},
		"raw_tp":       {"BPF_PROG_TYPE_RAW_TRACEPOINT", ""},
		"tp_btf":       {"BPF_PROG_TYPE_TRACING", "BPF_TRACE_RAW_TP"},
		"fentry":       {"BPF_PROG_TYPE_TRACING", "BPF_TRACE_FENTRY"},
		"fexit":        {"BPF_PROG_TYPE_TRACING", "BPF_TRACE_FEXIT"},
		"lsm":          {"BPF_PROG_TYPE_LSM", "BPF_LSM_MAC"},
		"iter":         {"BPF_PROG_TYPE_TRACING", "BPF_TRACE_ITER"},
		"connect4":     {"BPF_PROG_TYPE_CGROUP_SOCK_ADDR", "BPF_CGROUP_INET4_CONNECT"},
		"cgroup_skb":   {"BPF_PROG_TYPE_CGROUP_SKB", ""},  // optional
		"sock_create":  {"BPF_PROG_TYPE_CGROUP_SOCK", ""}, // optional
		"sockops":      {"BPF_PROG_TYPE_SOCK_OPS", ""},    // optional
		"sk_msg":       {"BPF_PROG_TYPE_SK_MSG", ""},      // optional
		"netkit":       {"BPF_PROG_TYPE_SCHED_CLS", "BPF_NETKIT_PRIMARY"},
		"netfilter":    {"BPF_PROG_TYPE_NETFILTER", "BPF_NETFILTER"},
		"perf_event":   {"BPF_PROG_TYPE_PERF_EVENT", ""},
		"syscall_prog": {"BPF_PROG_TYPE_SYSCALL", ""},
	}
	if len(o.programs) != len(want) {
		t.Errorf("%d programs, want %d", len(o.programs), len(want))
	}
	for _, p := range o.programs {
		w, ok := want[strings.TrimPrefix(p.spec.Name, "p_")]
		if !ok {
			t.Errorf("unexpected program %s", p.spec.Name)
			continue
		}
		var got [2]string
		for _, n := range p.needs {
			switch n.kind {
			case NeedProgramType:
				got[0] = n.name
			case NeedAttachType:
				got[1] = n.name
			case NeedMapType:
				t.Errorf("%s: needs map %s, the object has none", p.spec.Name, n.mapName)
			}
		}
		if got != w {
			t.Errorf("%s (%s): %q, want %q", p.spec.Name, p.spec.SectionName, got, w)
		}
	}
}

// findNeed returns the program's need of kind and name.
func findNeed(pr ProgramReport, kind, name string) *Need {
	for i, n := range pr.Needs {
		if n.Kind == kind && n.Name == name {
			return &pr.Needs[i]
		}
	}
	return nil
}

// TestNeedsOnHost: on the host kernel, execsnoop needs its ring buffer,
// its program type and its helpers, and has them all.
func TestNeedsOnHost(t *testing.T) {
	f := setup(t)
	res := relocate(t, f.object(t, "execsnoop"), f.host)
	for _, pr := range res.Report.Programs {
		if pr.Status != StatusOK || pr.Reason != "" {
			t.Errorf("%s: %s %q", pr.Name, pr.Status, pr.Reason)
		}
		for _, n := range pr.Needs {
			if n.Status != TargetPresent {
				t.Errorf("%s: %+v", pr.Name, n)
			}
		}
		if n := findNeed(pr, NeedMapType, "BPF_MAP_TYPE_RINGBUF"); n == nil || n.Map != "events" {
			t.Errorf("%s: no ring buffer need for map events: %+v", pr.Name, pr.Needs)
		}
		if findNeed(pr, NeedProgramType, "BPF_PROG_TYPE_TRACEPOINT") == nil {
			t.Errorf("%s: no tracepoint program type need: %+v", pr.Name, pr.Needs)
		}
		for _, h := range []string{"BPF_FUNC_ringbuf_reserve", "BPF_FUNC_ringbuf_submit", "BPF_FUNC_get_current_pid_tgid"} {
			if findNeed(pr, NeedHelper, h) == nil {
				t.Errorf("%s: no helper need %s: %+v", pr.Name, h, pr.Needs)
			}
		}
	}
}

// oldKernel loads the host's BTF without the given enumerators and funcs.
func oldKernel(t *testing.T, f *fixture, id string, enumerators, funcs []string) *Kernel {
	t.Helper()
	raw, err := testenv.OldKernelBTF(f.hostBTF, enumerators, funcs)
	if err != nil {
		t.Fatal(err)
	}
	k, err := LoadKernel(id, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestUnsupportedRingbuf: on a kernel whose BTF has no
// BPF_MAP_TYPE_RINGBUF (and no bpf_ringbuf_submit helper), every program
// of execsnoop is unsupported, naming both.
func TestUnsupportedRingbuf(t *testing.T) {
	f := setup(t)
	k := oldKernel(t, f, "host-without-ringbuf", []string{"BPF_MAP_TYPE_RINGBUF", "BPF_FUNC_ringbuf_submit"}, nil)
	res := relocate(t, f.object(t, "execsnoop"), k)
	if len(res.Report.Programs) == 0 {
		t.Fatal("no programs")
	}
	const want = "map events: ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel; " +
		"helper bpf_ringbuf_submit (BPF_FUNC_ringbuf_submit) is not in this kernel"
	for _, pr := range res.Report.Programs {
		if pr.Status != StatusUnsupported || pr.Reason != want {
			t.Errorf("%s: %s %q, want unsupported %q", pr.Name, pr.Status, pr.Reason, want)
		}
		if n := findNeed(pr, NeedMapType, "BPF_MAP_TYPE_RINGBUF"); n == nil || n.Status != TargetMissing {
			t.Errorf("%s: ring buffer need %+v", pr.Name, n)
		}
		if n := findNeed(pr, NeedHelper, "BPF_FUNC_ringbuf_reserve"); n == nil || n.Status != TargetPresent {
			t.Errorf("%s: ringbuf_reserve need %+v", pr.Name, n)
		}
	}
	// The minimized BTF and the pre-relocated object are still produced.
	if len(res.MinBTF) == 0 || len(res.Relocated) == 0 {
		t.Error("no minimized BTF or relocated object")
	}
}

// TestUnsupportedFeatures: the features object on a kernel without tcx and
// without the kfuncs it calls.
func TestUnsupportedFeatures(t *testing.T) {
	f := setup(t)
	k := oldKernel(t, f, "host-without-tcx", []string{"BPF_TCX_INGRESS", "BPF_TCX_EGRESS"},
		[]string{"bpf_cast_to_kern_ctx", "bpf_rcu_read_lock", "bpf_rcu_read_unlock"})
	res := relocate(t, f.object(t, "features"), k)
	want := map[string]struct{ status, reason string }{
		"tcx_pass":      {StatusUnsupported, "attach type BPF_TCX_INGRESS is not in this kernel"},
		"tc_pass":       {StatusOK, ""},
		"kern_ctx":      {StatusUnsupported, "kfunc bpf_cast_to_kern_ctx is not in this kernel"},
		"rcu_guarded":   {StatusOK, ""},
		"rcu_unguarded": {StatusUnsupported, "kfunc bpf_rcu_read_lock is not in this kernel; kfunc bpf_rcu_read_unlock is not in this kernel"},
	}
	for _, pr := range res.Report.Programs {
		w, ok := want[pr.Name]
		if !ok {
			t.Errorf("unexpected program %s", pr.Name)
			continue
		}
		if pr.Status != w.status || pr.Reason != w.reason {
			t.Errorf("%s: %s %q, want %s %q", pr.Name, pr.Status, pr.Reason, w.status, w.reason)
		}
	}
	// On the host, all of them are ok.
	for _, pr := range relocate(t, f.object(t, "features"), f.host).Report.Programs {
		if pr.Status != StatusOK || pr.Reason != "" {
			t.Errorf("host: %s: %s %q", pr.Name, pr.Status, pr.Reason)
		}
	}
}

// TestUnknownFeatures: a kernel whose BTF lacks enum bpf_func_id says
// nothing about helpers: they are unknown, not missing.
func TestUnknownFeatures(t *testing.T) {
	f := setup(t)
	var all []string
	for _, name := range uapiHelpers {
		all = append(all, name)
	}
	k, err := LoadKernel("x", mustOld(t, f.hostBTF, all), nil)
	if err != nil {
		t.Fatal(err)
	}
	feats, err := k.features(k.state)
	if err != nil {
		t.Fatal(err)
	}
	if feats.helpers != nil && len(feats.helpers) != 0 {
		t.Fatalf("helpers %v", feats.helpers)
	}
	res := relocate(t, f.object(t, "execsnoop"), k)
	for _, pr := range res.Report.Programs {
		if pr.Status != StatusOK {
			t.Errorf("%s: %s %q", pr.Name, pr.Status, pr.Reason)
		}
		for _, n := range pr.Needs {
			if n.Kind == NeedHelper && n.Status != TargetUnknown && n.Status != TargetPresent {
				t.Errorf("%s: %+v", pr.Name, n)
			}
		}
	}
}

func mustOld(t *testing.T, raw []byte, enumerators []string) []byte {
	t.Helper()
	var present []string
	k, err := LoadKernel("h", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	feats, err := k.features(k.state)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range enumerators {
		for _, n := range feats.helpers {
			if n == e {
				present = append(present, e)
			}
		}
	}
	b, err := testenv.OldKernelBTF(raw, present, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDebianFeatures: Debian's 6.1 has no tcx and none of the kfuncs of
// the features object (6.2+); its 6.12 has them all. Every enumerator both
// kernels name has the same value as in the generated tables (UAPI
// values never change).
func TestDebianFeatures(t *testing.T) {
	f := setup(t)
	o := f.object(t, "features")
	want := map[string]map[string]string{
		"6.1": {"tcx_pass": StatusUnsupported, "tc_pass": StatusOK, "kern_ctx": StatusUnsupported,
			"rcu_guarded": StatusOK, "rcu_unguarded": StatusUnsupported},
		"6.12": {"tcx_pass": StatusOK, "tc_pass": StatusOK, "kern_ctx": StatusOK, "rcu_guarded": StatusOK, "rcu_unguarded": StatusOK},
	}
	tables := map[string]map[uint32]string{}
	for _, series := range debianSeries {
		tk := debianKernel(t, series)
		feats, err := tk.k.features(tk.k.state)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range []struct {
			name  string
			idx   enumIndex
			table map[uint32]string
		}{{"map types", feats.mapTypes, uapiMapTypes}, {"program types", feats.progTypes, uapiProgTypes},
			{"attach types", feats.attachTypes, uapiAttachTypes}, {"helpers", feats.helpers, uapiHelpers}} {
			if len(e.idx) < 30 {
				t.Errorf("%s: %d %s", series, len(e.idx), e.name)
			}
			for v, n := range e.idx {
				if e.table[v] != n {
					t.Errorf("%s: %s %d is %s, table %s", series, e.name, v, n, e.table[v])
				}
			}
			tables[series+e.name] = e.idx
		}
		res := relocate(t, o, tk.k)
		for _, pr := range res.Report.Programs {
			if w := want[series][pr.Name]; pr.Status != w {
				t.Errorf("%s: %s: %s %q, want %s", series, pr.Name, pr.Status, pr.Reason, w)
			}
			t.Logf("%s: %s: %s %s", series, pr.Name, pr.Status, pr.Reason)
		}
	}
	if _, ok := tables["6.1attach types"][uint32(ebpf.AttachTCXIngress)]; ok {
		t.Error("6.1 has BPF_TCX_INGRESS")
	}
	if _, ok := tables["6.12attach types"][uint32(ebpf.AttachTCXIngress)]; !ok {
		t.Error("6.12 lacks BPF_TCX_INGRESS")
	}
}

var reasonRE = regexp.MustCompile(`^[^\n]+$`)

// TestReportReasonsOneLine: every reason on every test kernel is one line.
func TestReportReasonsOneLine(t *testing.T) {
	f := setup(t)
	k := oldKernel(t, f, "old", []string{"BPF_MAP_TYPE_RINGBUF", "BPF_TCX_INGRESS"}, nil)
	for _, name := range f.names() {
		for _, pr := range relocate(t, f.object(t, name), k).Report.Programs {
			if pr.Reason != "" && !reasonRE.MatchString(pr.Reason) {
				t.Errorf("%s/%s: %q", name, pr.Name, pr.Reason)
			}
			if (pr.Reason != "") != (pr.Status == StatusUnsupported) && pr.Status != StatusFailed {
				t.Errorf("%s/%s: status %s, reason %q", name, pr.Name, pr.Status, pr.Reason)
			}
		}
	}
}
