// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* bad: a revision of schedcount's count_openat that the verifier rejects
 * (it reads past its map value), beside another rejected program and a
 * good one. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} openat_count SEC(".maps");

SEC("tp/syscalls/sys_enter_openat")
int count_openat(void *ctx)
{
	u32 key = 0;
	u64 *cnt;

	cnt = bpf_map_lookup_elem(&openat_count, &key);
	if (cnt)
		cnt[1] += 1; /* out of bounds: the value is one u64 */
	return 0;
}

SEC("tp/syscalls/sys_enter_close")
int bad_ctx(void *ctx)
{
	return *(int *)(ctx + 65536); /* past the tracepoint's context */
}

SEC("tp/syscalls/sys_enter_getpid")
int good_getpid(void *ctx)
{
	return 0;
}
