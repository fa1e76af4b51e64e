// SPDX-License-Identifier: GPL-2.0
/* A __noinline subprogram in .text called from two programs, global data in
 * .rodata, .data and .bss, and maps in .maps. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} totals SEC(".maps");

const volatile u32 filter_pid = 0;   /* .rodata */
u64 calls = 1;                       /* .data */
u64 misses;                          /* .bss */

static __noinline int bump(u32 key, u64 by)
{
	u64 *v, one = by;

	if (filter_pid && key != filter_pid)
		return 0;
	v = bpf_map_lookup_elem(&counts, &key);
	if (v) {
		__sync_fetch_and_add(v, by);
		return 1;
	}
	misses++;
	bpf_map_update_elem(&counts, &key, &one, BPF_ANY);
	return 0;
}

static __noinline int total(u32 slot)
{
	u64 *t = bpf_map_lookup_elem(&totals, &slot);

	if (t)
		__sync_fetch_and_add(t, 1);
	return bump(slot, 1);
}

SEC("tp/sched/sched_process_exec")
int on_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	calls++;
	return bump(pid, 1) + total(0);
}

SEC("tp/sched/sched_process_exit")
int on_exit(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	return bump(pid, 2) + total(1);
}
