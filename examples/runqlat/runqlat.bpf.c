// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* runqlat: how long runnable tasks wait for a CPU, as log2 histograms of
 * microseconds, in the style of libbpf-tools' runqlat: one for the whole
 * system (hist) and one per process (hists, keyed by a struct). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "runqlat.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_RUNNING 0

/* When each task was woken or preempted, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct hist);
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct hkey);
	__type(value, struct hist);
} hists SEC(".maps");

static __always_inline void enqueued(struct task_struct *p)
{
	u32 pid = BPF_CORE_READ(p, pid);
	u64 ts = bpf_ktime_get_ns();

	if (pid)
		bpf_map_update_elem(&start, &pid, &ts, BPF_ANY);
}

/* slot_of returns the log2 slot of v: floor(log2(v)), 0 for 0 and 1. */
static __always_inline u32 slot_of(u64 v)
{
	u32 slot = 0;

	for (int i = 0; i < 64; i++) {
		if (v <= 1)
			break;
		v >>= 1;
		slot++;
	}
	return slot < MAX_SLOTS ? slot : MAX_SLOTS - 1;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(handle_wakeup, struct task_struct *p)
{
	enqueued(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(handle_wakeup_new, struct task_struct *p)
{
	enqueued(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	static const struct hist zero;
	struct hkey key = {};
	struct hist *h;
	u64 *tsp, delta;
	u32 pid, slot, idx = 0;

	/* A task preempted while runnable waits again from now. */
	if (BPF_CORE_READ(prev, __state) == TASK_RUNNING)
		enqueued(prev);

	pid = BPF_CORE_READ(next, pid);
	tsp = bpf_map_lookup_elem(&start, &pid);
	if (!tsp)
		return 0;
	delta = (bpf_ktime_get_ns() - *tsp) / 1000;
	bpf_map_delete_elem(&start, &pid);
	slot = slot_of(delta);

	h = bpf_map_lookup_elem(&hist, &idx);
	if (h)
		__sync_fetch_and_add(&h->slots[slot], 1);

	key.tgid = BPF_CORE_READ(next, tgid);
	BPF_CORE_READ_STR_INTO(&key.comm, next, comm);
	h = bpf_map_lookup_elem(&hists, &key);
	if (!h) {
		bpf_map_update_elem(&hists, &key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, &key);
		if (!h)
			return 0;
	}
	__sync_fetch_and_add(&h->slots[slot], 1);
	return 0;
}
