// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* halfattach: a tracepoint program that attaches anywhere, and an xdp
 * program that needs an interface: loaded without one, the first is
 * attached before the second fails, and the load must undo it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 half_count;

SEC("tp/syscalls/sys_enter_openat")
int a_half_tp(void *ctx)
{
	__sync_fetch_and_add(&half_count, 1);
	return 0;
}

SEC("xdp")
int b_half_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}
