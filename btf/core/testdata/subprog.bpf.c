// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* subprog: a subprogram with CO-RE reads, in .text, called from two
 * programs in two sections. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 seen[2];

static __attribute__((noinline)) u64 parent_and_self(struct task_struct *task)
{
	u64 ppid = BPF_CORE_READ(task, real_parent, tgid);

	return ppid << 32 | BPF_CORE_READ(task, pid);
}

SEC("tp/sched/sched_process_exec")
int on_exec(void *ctx)
{
	seen[0] = parent_and_self((struct task_struct *)bpf_get_current_task());
	return 0;
}

SEC("tp/sched/sched_process_fork")
int on_fork(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (bpf_core_field_exists(task->flags))
		seen[1] = parent_and_self(task) + BPF_CORE_READ(task, flags);
	return 0;
}
