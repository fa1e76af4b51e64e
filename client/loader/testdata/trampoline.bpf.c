// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* trampoline: fentry, fexit, fmod_ret and lsm programs (BPF trampolines),
 * each counting its hits. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 hits;

SEC("fentry/do_unlinkat")
int BPF_PROG(fentry_unlinkat, int dfd, struct filename *name)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("fexit/do_unlinkat")
int BPF_PROG(fexit_unlinkat, int dfd, struct filename *name, long ret)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("fmod_ret/bpf_modify_return_test")
int BPF_PROG(fmod_ret_test, int a, int *b, int ret)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}
