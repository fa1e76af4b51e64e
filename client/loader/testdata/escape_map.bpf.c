// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* escape_map: a hand-crafted object whose map's ELF name, chosen with an
 * asm label, is a path out of the set's pin directory. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} escape_counts __asm__("../../escaped_map") SEC(".maps");

SEC("tp/syscalls/sys_enter_openat")
int escape_map_prog(void *ctx)
{
	u32 key = 0;
	u64 *v = bpf_map_lookup_elem(&escape_counts, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}
