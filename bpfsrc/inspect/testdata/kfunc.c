// SPDX-License-Identifier: GPL-2.0
// kfunc.c calls kernel functions (kfuncs), which need a GPL-compatible
// license.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

u64 found;

SEC("tp_btf/task_newtask")
int BPF_PROG(on_newtask, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *t;

	t = bpf_task_from_pid(task->tgid);
	if (!t)
		return 0;
	found++;
	bpf_task_release(t);
	return 0;
}
