// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* tracing: raw tracepoint, perf_event and task iterator programs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Only count system calls of this process, 0: all. */
const volatile int targ_tgid = 0;

u64 raw_hits;
u64 samples;

SEC("raw_tp/sys_enter")
int raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return 0;
	__sync_fetch_and_add(&raw_hits, 1);
	return 0;
}

SEC("perf_event")
int perf_sample(struct bpf_perf_event_data *ctx)
{
	__sync_fetch_and_add(&samples, 1);
	return 0;
}

SEC("iter/task")
int iter_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	if (task->pid == task->tgid)
		BPF_SEQ_PRINTF(seq, "%d %s\n", task->tgid, task->comm);
	return 0;
}
