// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// tracing.c exercises most of what inspect reports: several program types,
// every common map type, globals in each data section and CO-RE reads.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct event {
	u32 pid;
	u32 ppid;
	char comm[16];
};

struct config {
	u32 verbose;
	u64 threshold;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, u32);
	__type(value, u32);
} pinned SEC(".maps");

/* .rodata: set by the loader before the program is verified. */
const volatile u32 targ_pid = 0;
const volatile char targ_comm[16] = {};
/* .rodata.mode: a custom read-only section. */
const volatile u8 mode SEC(".rodata.mode") = 2;
/* .data */
u64 seen = 1;
/* .bss */
u64 dropped;
/* .data.cfg: a custom writable section. */
struct config cfg SEC(".data.cfg") = { .verbose = 1 };

SEC("tp/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;

	if (targ_pid && pid != targ_pid)
		return 0;
	if (mode > 3)
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	e->pid = pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	__sync_fetch_and_add(&seen, 1);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u32 pid = next->pid;
	u64 one = 1, *cnt;

	if (cfg.verbose && targ_comm[0] == 'x')
		return 0;
	cnt = bpf_map_lookup_elem(&counts, &pid);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	else
		bpf_map_update_elem(&counts, &pid, &one, BPF_ANY);
	return 0;
}

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	u32 key = 0;
	u64 *v;
	struct event *e;

	v = bpf_map_lookup_elem(&totals, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	e = bpf_map_lookup_elem(&scratch, &key);
	if (e)
		e->pid = 0;
	v = bpf_map_lookup_elem(&pinned, &key);
	return XDP_PASS;
}
