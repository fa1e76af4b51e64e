// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* mtime: the modification time of the current executable, a field that
 * moved between real kernels. Up to 6.5, struct inode had
 * "struct timespec64 i_mtime"; since 6.11 it has "time64_t i_mtime_sec"
 * and "u32 i_mtime_nsec" (Debian 6.1 vs 6.12 and the host's vmlinux.h).
 *
 * exe_mtime reads whichever exists, guarded by bpf_core_field_exists: one
 * read is poisoned on every kernel, always guarded. exe_mtime_old reads the
 * old field unguarded: ok on 6.1, poisoned and unguarded on newer kernels. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct inode___old {
	struct timespec64 i_mtime;
} __attribute__((preserve_access_index));

s64 mtime[2];

static __always_inline struct inode *exe_inode(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, mm, exe_file, f_inode);
}

SEC("tp/sched/sched_process_exec")
int exe_mtime(void *ctx)
{
	struct inode *inode = exe_inode();
	struct inode___old *old = (void *)inode;

	if (bpf_core_field_exists(inode->i_mtime_sec))
		mtime[0] = BPF_CORE_READ(inode, i_mtime_sec);
	else if (bpf_core_field_exists(old->i_mtime))
		mtime[0] = BPF_CORE_READ(old, i_mtime.tv_sec);
	else
		mtime[0] = -1;
	return 0;
}

SEC("tp/sched/sched_process_exec")
int exe_mtime_old(void *ctx)
{
	struct inode___old *old = (void *)exe_inode();

	mtime[1] = BPF_CORE_READ(old, i_mtime.tv_sec);
	return 0;
}
