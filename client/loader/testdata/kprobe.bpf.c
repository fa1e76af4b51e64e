// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* kprobe: one program per kprobe flavour, each counting its hits. The
 * loader tests attach them one at a time (Options.Programs). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 hits;

SEC("kprobe/do_sys_openat2")
int BPF_KPROBE(kprobe_openat2)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("kretprobe/do_sys_openat2")
int BPF_KRETPROBE(kretprobe_openat2)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("ksyscall/openat")
int ksyscall_openat(void *ctx)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("kprobe.multi/do_sys_openat*")
int kprobe_multi_openat(void *ctx)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}
