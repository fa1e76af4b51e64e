// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* schedcount: count context switches per thread, and openat() calls. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "schedcount.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_RUNNING 0

/* Only count openat() calls of this process, 0: all. */
const volatile int targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PIDS);
	__type(key, u32);
	__type(value, struct sched_stats);
} switches SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} openat_count SEC(".maps");

/* Kernels before 5.14 called task_struct::__state "state". */
struct task_struct___o {
	volatile long int state;
} __attribute__((preserve_access_index));

static __always_inline long get_task_state(struct task_struct *t)
{
	struct task_struct___o *old = (void *)t;

	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ(old, state);
}

static __always_inline struct sched_stats *stats_of(u32 pid)
{
	static const struct sched_stats zero;
	struct sched_stats *s;

	s = bpf_map_lookup_elem(&switches, &pid);
	if (s)
		return s;
	bpf_map_update_elem(&switches, &pid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&switches, &pid);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct sched_stats *s;

	if (get_task_state(prev) == TASK_RUNNING) {
		s = stats_of(BPF_CORE_READ(prev, pid));
		if (s)
			__sync_fetch_and_add(&s->preempted, 1);
	}

	s = stats_of(BPF_CORE_READ(next, pid));
	if (s)
		__sync_fetch_and_add(&s->switched_in, 1);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int count_openat(struct trace_event_raw_sys_enter *ctx)
{
	u32 key = 0;
	u64 *cnt;

	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return 0;

	cnt = bpf_map_lookup_elem(&openat_count, &key);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return 0;
}
