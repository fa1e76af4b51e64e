package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/bpfarm/bpfarm/internal/btftest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func relocate(tb testing.TB, o *Object, k *Kernel) *Result {
	tb.Helper()
	res, err := o.Relocate(k)
	if err != nil {
		tb.Fatalf("relocate against %s: %v", k.ID, err)
	}
	return res
}

// TestReportHost checks every program's report against the host kernel.
func TestReportHost(t *testing.T) {
	f := setup(t)

	type want struct {
		status   string
		relos    int
		poisoned []Poison
		targets  []Target
	}
	tracepoint := func(kind, name string) []Target { return []Target{{kind, name, TargetPresent}} }
	wants := map[string]map[string]want{
		"execsnoop": {
			"handle_exec": {StatusOK, 3, nil, tracepoint(TargetTracepoint, "sched_process_exec")},
		},
		"schedcount": {
			// task_struct___o::state (pre-5.14) is poisoned, behind
			// bpf_core_field_exists(t->__state), which holds here.
			"handle_switch": {StatusOK, 5, []Poison{{"field_byte_offset", "task_struct.state", 14, true}},
				tracepoint(TargetBTFTracepoint, "sched_switch")},
			"count_openat": {StatusOK, 0, nil, tracepoint(TargetTracepoint, "sys_enter_openat")},
		},
		"xdpcount": {
			"xdp_count": {StatusOK, 4, nil, nil},
		},
		"execsnoop-perf": {
			"tracepoint__syscalls__sys_enter_execve": {StatusOK, 3, nil, tracepoint(TargetTracepoint, "sys_enter_execve")},
			"tracepoint__syscalls__sys_exit_execve":  {StatusOK, 1, nil, tracepoint(TargetTracepoint, "sys_exit_execve")},
		},
		"runqlat": {
			"handle_wakeup":     {StatusOK, 1, nil, tracepoint(TargetBTFTracepoint, "sched_wakeup")},
			"handle_wakeup_new": {StatusOK, 1, nil, tracepoint(TargetBTFTracepoint, "sched_wakeup_new")},
			"handle_switch":     {StatusOK, 5, nil, tracepoint(TargetBTFTracepoint, "sched_switch")},
		},
		"writesize": {
			// ctx->args[2] of trace_event_raw_sys_enter.
			"count_write": {StatusOK, 1, nil, tracepoint(TargetTracepoint, "sys_enter_write")},
		},
		"uprobe-readline": {
			"readline_entry":  {StatusOK, 0, nil, nil},
			"readline_return": {StatusOK, 1, nil, nil},
		},
		"fields": {
			"count_opens":            {StatusOK, 3, nil, tracepoint(TargetTracepoint, "sys_enter_openat")},
			"read_sessionid":         {StatusOK, 1, nil, tracepoint(TargetTracepoint, "sys_enter_openat")},
			"read_sessionid_guarded": {StatusOK, 2, nil, tracepoint(TargetTracepoint, "sys_enter_openat")},
		},
		"types": {
			"enums": {StatusOK, 3, []Poison{{"enumval_value", "enum bpfarm_missing::BPFARM_MISSING_VALUE", 8, true}},
				tracepoint(TargetRawTracepoint, "sys_enter")},
			"types": {StatusOK, 6, []Poison{{"type_size", "struct bpfarm_missing_struct", 8, true}},
				tracepoint(TargetRawTracepoint, "sys_enter")},
			"bitfields": {StatusOK, 7, nil, tracepoint(TargetBTFTracepoint, "sched_switch")},
		},
		"subprog": {
			"on_exec": {StatusOK, 3, nil, tracepoint(TargetTracepoint, "sched_process_exec")},
			"on_fork": {StatusOK, 5, nil, tracepoint(TargetTracepoint, "sched_process_fork")},
		},
		"mtime": {
			"exe_mtime": {StatusOK, 7, []Poison{{"field_byte_offset", "inode.i_mtime.tv_sec", 30, true}},
				tracepoint(TargetTracepoint, "sched_process_exec")},
			"exe_mtime_old": {StatusPoisoned, 4, []Poison{{"field_byte_offset", "inode.i_mtime.tv_sec", 22, false}},
				tracepoint(TargetTracepoint, "sched_process_exec")},
		},
		"layout": {
			"skb_fields": {StatusOK, 12, nil, tracepoint(TargetBTFTracepoint, "netif_receive_skb")},
			// list_head___bad::next is an int, the kernel's a pointer.
			"task_fields": {StatusPoisoned, 11, []Poison{{"field_byte_offset", "list_head.next", 46, false}},
				tracepoint(TargetBTFTracepoint, "sched_process_exec")},
		},
		"features": {
			"tcx_pass": {StatusOK, 0, nil, nil},
			"tc_pass":  {StatusOK, 0, nil, nil},
			"kern_ctx": {StatusOK, 1, nil, []Target{{TargetKfunc, "bpf_cast_to_kern_ctx", TargetPresent}}},
			"rcu_guarded": {StatusOK, 0, nil, []Target{
				{TargetKfunc, "bpf_rcu_read_lock", TargetPresent}, {TargetKfunc, "bpf_rcu_read_unlock", TargetPresent}}},
			"rcu_unguarded": {StatusOK, 0, nil, []Target{
				{TargetKfunc, "bpf_rcu_read_lock", TargetPresent}, {TargetKfunc, "bpf_rcu_read_unlock", TargetPresent}}},
		},
		"kfunc": {
			"acquire": {StatusOK, 1, nil, []Target{
				{TargetBTFTracepoint, "sched_process_fork", TargetPresent},
				{TargetKfunc, "bpf_task_acquire", TargetPresent},
				{TargetKfunc, "bpf_task_release", TargetPresent},
			}},
		},
	}

	for _, name := range f.names() {
		t.Run(name, func(t *testing.T) {
			progs, ok := wants[name]
			if !ok {
				t.Fatalf("no expectations for object %s", name)
			}
			res := relocate(t, f.object(t, name), f.host)
			if res.Report.Kernel != "host" {
				t.Errorf("kernel %q", res.Report.Kernel)
			}
			if len(res.Report.Programs) != len(progs) {
				t.Errorf("%d programs, want %d", len(res.Report.Programs), len(progs))
			}
			for _, pr := range res.Report.Programs {
				w, ok := progs[pr.Name]
				if !ok {
					t.Errorf("unexpected program %s", pr.Name)
					continue
				}
				got := want{pr.Status, pr.Relocations, pr.Poisoned, pr.Targets}
				if pr.Error != "" || !jsonEqual(got, w) {
					t.Errorf("%s: got %+v (error %q), want %+v", pr.Name, got, pr.Error, w)
				}
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestReportMissingField checks the report against the modified kernel,
// where task_struct::sessionid does not exist.
func TestReportMissingField(t *testing.T) {
	f := setup(t)
	o := f.object(t, "fields")

	host := relocate(t, o, f.host).Report
	mod := relocate(t, o, f.modified).Report
	for _, name := range []string{"count_opens", "read_sessionid", "read_sessionid_guarded"} {
		if s := progReport(t, host, name).Status; s != StatusOK {
			t.Errorf("host: %s is %s, want ok", name, s)
		}
	}
	if pr := progReport(t, mod, "count_opens"); pr.Status != StatusOK {
		t.Errorf("modified: count_opens is %s, want ok", pr.Status)
	}
	path := removedStruct + "." + removedField
	for name, guarded := range map[string]bool{"read_sessionid": false, "read_sessionid_guarded": true} {
		pr := progReport(t, mod, name)
		want := StatusPoisoned
		if guarded {
			want = StatusOK // the poison is unreachable: the program loads
		}
		if pr.Status != want || len(pr.Poisoned) != 1 {
			t.Errorf("modified: %s: status %s, poisoned %v", name, pr.Status, pr.Poisoned)
			continue
		}
		p := pr.Poisoned[0]
		if p.Kind != "field_byte_offset" || p.Path != path || p.Guarded != guarded {
			t.Errorf("modified: %s: poison %+v, want field_byte_offset %s guarded=%v", name, p, path, guarded)
		}
	}
	if b, err := json.Marshal(mod); err != nil || !strings.Contains(string(b), `"path":"task_struct.sessionid"`) {
		t.Errorf("JSON report: %s, %v", b, err)
	}
}

// TestGuardedFollowsKernel checks that Guarded depends on the kernel's
// values: schedcount reads task_struct::__state if it exists, else the old
// task_struct::state. On a kernel without __state, the __state read is the
// guarded poison and the state read is live.
func TestGuardedFollowsKernel(t *testing.T) {
	f := setup(t)
	raw, err := withoutMember(f.hostBTF, "task_struct", "__state")
	if err != nil {
		t.Fatal(err)
	}
	k, err := LoadKernel("host-without-__state", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	pr := progReport(t, relocate(t, f.object(t, "schedcount"), k).Report, "handle_switch")
	// Both reads are poisoned: state doesn't exist either. Only the one
	// behind the failed existence check (__state) is guarded.
	want := []Poison{
		{"field_byte_offset", "task_struct.__state", 4, true},
		{"field_byte_offset", "task_struct.state", 14, false},
	}
	if pr.Status != StatusPoisoned || !jsonEqual(pr.Poisoned, want) {
		t.Errorf("got %s %+v, want %+v", pr.Status, pr.Poisoned, want)
	}
}

// TestTargets checks the target rules on synthetic programs.
func TestTargets(t *testing.T) {
	f := setup(t)
	cases := []struct {
		section string
		kfuncs  []string
		want    []Target
	}{
		{"tp/sched/sched_switch", nil, []Target{{TargetTracepoint, "sched_switch", TargetPresent}}},
		{"tracepoint/bpfarm/no_such_event", nil, []Target{{TargetTracepoint, "no_such_event", TargetMissing}}},
		{"tp/syscalls/sys_exit_read", nil, []Target{{TargetTracepoint, "sys_exit_read", TargetPresent}}},
		{"tp/syscalls/sys_enter_bpfarm_nope", nil, []Target{{TargetTracepoint, "sys_enter_bpfarm_nope", TargetUnknown}}},
		{"raw_tp/sched_switch", nil, []Target{{TargetRawTracepoint, "sched_switch", TargetPresent}}},
		{"raw_tp/bpfarm_nope", nil, []Target{{TargetRawTracepoint, "bpfarm_nope", TargetMissing}}},
		{"tp_btf/sched_process_exec", nil, []Target{{TargetBTFTracepoint, "sched_process_exec", TargetPresent}}},
		{"fentry/do_unlinkat", nil, []Target{{TargetFunction, "do_unlinkat", TargetPresent}}},
		{"fexit/bpfarm_no_such_function", nil, []Target{{TargetFunction, "bpfarm_no_such_function", TargetMissing}}},
		{"lsm/file_open", nil, []Target{{TargetFunction, "bpf_lsm_file_open", TargetPresent}}},
		{"kprobe/do_unlinkat+0x10", nil, []Target{{TargetFunction, "do_unlinkat", TargetPresent}}},
		{"kretprobe/bpfarm_no_such_function", nil, []Target{{TargetFunction, "bpfarm_no_such_function", TargetUnknown}}},
		{"ksyscall/openat", nil, []Target{{TargetFunction, "openat", TargetPresent}}},
		{"uprobe//bin/bash:readline", nil, nil},
		{"xdp", []string{"bpf_rcu_read_lock", "bpfarm_no_such_kfunc"}, []Target{
			{TargetKfunc, "bpf_rcu_read_lock", TargetPresent},
			{TargetKfunc, "bpfarm_no_such_kfunc", TargetMissing},
		}},
	}
	for _, c := range cases {
		ps := &ebpf.ProgramSpec{Name: "p", SectionName: c.section, Instructions: asm.Instructions{asm.Return()}}
		reqs := programTargets(ps, c.kfuncs)
		var names []string
		for _, r := range reqs {
			for _, l := range r.lookups {
				names = append(names, l.name)
			}
		}
		var got []Target
		err := f.host.lookup(names, func(mods bool) (err error) {
			got, err = resolveTargets(f.host, reqs, false, mods)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %v: got %v, want %v", c.section, c.kfuncs, got, c.want)
		}
	}
}

// TestReportConcurrent relocates every object against every kernel from
// several goroutines at once and checks that the reports are the ones
// computed one at a time. The Debian kernels are fresh copies, so the
// goroutines race to decode their (module) types; run it with -race.
func TestReportConcurrent(t *testing.T) {
	f := setup(t)
	type job struct {
		o    *Object
		k    *Kernel
		want string
	}
	type pair struct{ fresh, ref *Kernel }
	kernels := []pair{{f.host, f.host}, {f.modified, f.modified}, {f.ambiguous, f.ambiguous}}
	for _, tk := range debianKernels(t) {
		k, err := LoadKernel(tk.k.ID, tk.vmlinux, tk.modules)
		if err != nil {
			t.Fatal(err)
		}
		kernels = append(kernels, pair{k, tk.k}, pair{k.WithID(tk.k.ID), tk.k})
	}
	var jobs []job
	for _, name := range f.names() {
		o := f.object(t, name)
		for _, k := range kernels {
			b, _ := json.Marshal(relocate(t, o, k.ref).Report)
			jobs = append(jobs, job{o, k.fresh, string(b)})
		}
	}

	const workers = 4
	errs := make(chan error, workers*len(jobs))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range jobs {
				j := jobs[(i+w*len(jobs)/workers)%len(jobs)]
				res, err := j.o.Relocate(j.k)
				if err != nil {
					errs <- err
					continue
				}
				if b, _ := json.Marshal(res.Report); string(b) != j.want {
					errs <- fmt.Errorf("report %s, want %s", b, j.want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestReportFailed relocates against a kernel with two task_structs that
// disagree on the offset of pid: the relocation is ambiguous, the programs
// reading pid fail, and the pre-relocated object has their relocated
// instructions poisoned.
func TestReportFailed(t *testing.T) {
	f := setup(t)
	o := f.object(t, "subprog")
	res := relocate(t, o, f.ambiguous)
	for _, pr := range res.Report.Programs {
		if pr.Status != StatusFailed || !strings.Contains(pr.Error, "ambiguous") || strings.Contains(pr.Error, "\n") {
			t.Errorf("%s: status %s, error %q; want failed, ambiguous", pr.Name, pr.Status, pr.Error)
		}
		// Only the relocations of pid are ambiguous, each named by its
		// path; the other fields of task_struct resolve.
		if len(pr.Ambiguous) == 0 || len(pr.Ambiguous) >= pr.Relocations {
			t.Errorf("%s: %d ambiguous of %d relocations: %+v", pr.Name, len(pr.Ambiguous), pr.Relocations, pr.Ambiguous)
		}
		for _, a := range pr.Ambiguous {
			if a.Path != "task_struct.pid" || a.Candidates != 2 {
				t.Errorf("%s: ambiguous %+v, want task_struct.pid with 2 candidates", pr.Name, a)
			}
		}
		if !strings.Contains(pr.Error, "task_struct.pid") {
			t.Errorf("%s: error %q does not name task_struct.pid", pr.Name, pr.Error)
		}
	}
	for _, p := range o.programs {
		for _, r := range p.relos {
			var ins asm.Instruction
			if err := ins.Unmarshal(bytes.NewReader(res.Relocated[r.pos:]), o.byteOrder, "linux"); err != nil {
				t.Fatal(err)
			}
			if !ins.IsBuiltinCall() || ins.Constant != int64(btf.COREBadRelocationSentinel) {
				t.Errorf("%s: instruction %d is %v, want the CO-RE poison call", p.spec.Name, r.raw, ins)
			}
		}
	}
	// Programs not reading pid still relocate.
	if pr := progReport(t, relocate(t, f.object(t, "execsnoop"), f.ambiguous).Report, "handle_exec"); pr.Status != StatusOK {
		t.Errorf("execsnoop: %s %s", pr.Status, pr.Error)
	}
}

// TestReportDuplicates relocates against a kernel whose BTF defines struct
// task_struct twice, identically, as pahole left it in 4.18/4.19 kernels:
// every candidate agrees, so every program relocates as against the host,
// with the same fixups.
func TestReportDuplicates(t *testing.T) {
	f := setup(t)
	raw, err := btftest.Rewrite{Identical: []string{"task_struct", "file", "sk_buff"}}.Apply(f.hostBTF)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := LoadKernel("host-duplicates", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range f.names() {
		o := f.object(t, name)
		want := relocate(t, o, f.host)
		got := relocate(t, o, dup)
		for _, wp := range want.Report.Programs {
			gp := progReport(t, got.Report, wp.Name)
			if typeIDsOnly(gp.Ambiguous) {
				// The two definitions have two type ids: libbpf, too,
				// refuses bpf_core_type_id_kernel of such a type
				// ("relocation decision ambiguity").
				continue
			}
			if gp.Status != wp.Status || len(gp.Ambiguous) != 0 {
				t.Errorf("%s/%s: %s %q %+v, want %s as on the host", name, wp.Name, gp.Status, gp.Error, gp.Ambiguous, wp.Status)
			}
		}
		hf, err := o.Fixups(f.host.VMLinux)
		if err != nil {
			t.Fatal(err)
		}
		df, err := o.Fixups(dup.VMLinux)
		if err != nil {
			t.Fatal(err)
		}
		for prog, fx := range hf {
			if fmt.Sprint(fx) != fmt.Sprint(df[prog]) && !usesTypeIDs(fx) {
				t.Errorf("%s/%s: fixups %v, want %v", name, prog, df[prog], fx)
			}
		}
	}
}

// usesTypeIDs reports whether fixups hold a kernel type id, which differs
// between kernels that order their types differently.
func usesTypeIDs(fx []Fixup) bool {
	for _, f := range fx {
		if strings.HasPrefix(f.Kind, "type_id") {
			return true
		}
	}
	return false
}

// typeIDsOnly reports whether amb is not empty and only holds type id
// relocations.
func typeIDsOnly(amb []Ambiguity) bool {
	for _, a := range amb {
		if a.Kind != "type_id_target" {
			return false
		}
	}
	return len(amb) > 0
}
