// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* kfunc: a tp_btf program calling kfuncs, for the target report. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

u64 last_pid;

SEC("tp_btf/sched_process_fork")
int BPF_PROG(acquire, struct task_struct *parent, struct task_struct *child)
{
	struct task_struct *t = bpf_task_acquire(child);

	if (!t)
		return 0;
	last_pid = BPF_CORE_READ(t, pid);
	bpf_task_release(t);
	return 0;
}
