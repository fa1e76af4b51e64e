// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* exportbench: ten maps of up to 10240 entries for the metrics export
 * benchmark (the benchmark fills them through their pins): eight hash maps
 * of per-flow counters (a struct key, a struct of two counters) and two of
 * log2 histograms (16 slots) keyed by a u32. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct xflow_key {
	__u32 pid;
	__u32 cpu;
};

struct xflow_stats {
	__u64 packets;
	__u64 bytes;
};

struct xhist {
	__u32 slots[16];
};

#define COUNTER_MAP(name)                                  \
	struct {                                           \
		__uint(type, BPF_MAP_TYPE_HASH);           \
		__uint(max_entries, 10240);                \
		__type(key, struct xflow_key);              \
		__type(value, struct xflow_stats);          \
	} name SEC(".maps")

#define HIST_MAP(name)                                     \
	struct {                                           \
		__uint(type, BPF_MAP_TYPE_HASH);           \
		__uint(max_entries, 10240);                \
		__type(key, __u32);                        \
		__type(value, struct xhist);                \
	} name SEC(".maps")

COUNTER_MAP(c0);
COUNTER_MAP(c1);
COUNTER_MAP(c2);
COUNTER_MAP(c3);
COUNTER_MAP(c4);
COUNTER_MAP(c5);
COUNTER_MAP(c6);
COUNTER_MAP(c7);
HIST_MAP(h0);
HIST_MAP(h1);

SEC("tp/syscalls/sys_enter_getppid")
int touch(void *ctx)
{
	struct xflow_key k = { .pid = bpf_get_current_pid_tgid() >> 32 };
	struct xflow_stats *s = bpf_map_lookup_elem(&c0, &k);
	__u32 h = 0;
	struct xhist *hs;

	if (s)
		__sync_fetch_and_add(&s->packets, 1);
	hs = bpf_map_lookup_elem(&h0, &h);
	if (hs)
		__sync_fetch_and_add(&hs->slots[0], 1);
	return 0;
}
