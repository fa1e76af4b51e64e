// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* escape: a hand-crafted object whose program's ELF name, chosen with an
 * asm label, is a path out of the set's pin directory. The server's
 * inspection refuses it; the loader must too, for objects that never went
 * through a server. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 escape_count;

int escape_prog(void *ctx) __asm__("../../escaped_prog");

SEC("tp/syscalls/sys_enter_openat")
int escape_prog(void *ctx)
{
	__sync_fetch_and_add(&escape_count, 1);
	return 0;
}
