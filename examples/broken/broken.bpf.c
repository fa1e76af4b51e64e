// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* broken: a program with a syntax error, for testing how the farm reports
 * compiler diagnostics. Keep the line numbers stable: tests rely on
 *
 * expected diagnostic: broken.bpf.c:17:13: error: expected ';' at end of declaration
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 calls;

SEC("tp/syscalls/sys_enter_getpid")
int handle_getpid(void *ctx)
{
	u64 one = 1
	__sync_fetch_and_add(&calls, one);
	return 0;
}
