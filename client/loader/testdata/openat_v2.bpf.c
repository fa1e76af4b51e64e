// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* openat_v2: a new revision of schedcount's openat counter, with the same
 * map, that also counts in a global of its own. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile int targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} openat_count SEC(".maps");

u64 v2_hits;

SEC("tp/syscalls/sys_enter_openat")
int count_openat(struct trace_event_raw_sys_enter *ctx)
{
	u32 key = 0;
	u64 *cnt;

	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return 0;
	__sync_fetch_and_add(&v2_hits, 1);
	cnt = bpf_map_lookup_elem(&openat_count, &key);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return 0;
}
