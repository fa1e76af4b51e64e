// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* execsnoop: report every successful exec() through a ring buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "execsnoop.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Filters, set by the loader before the program is verified. */
const volatile unsigned int min_uid = 0;	/* ignore uids below this */
const volatile int targ_ppid = 0;		/* only children of this process, 0: all */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tp/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task;
	unsigned int fname_off;
	struct event *e;
	unsigned int uid;
	int ppid;

	uid = (u32)bpf_get_current_uid_gid();
	if (uid < min_uid)
		return 0;

	task = (struct task_struct *)bpf_get_current_task();
	ppid = BPF_CORE_READ(task, real_parent, tgid);
	if (targ_ppid && ppid != targ_ppid)
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;

	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = ppid;
	e->uid = uid;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));

	/* The filename is a dynamic array: __data_loc holds its offset in
	 * the low 16 bits and its length in the high 16 bits. */
	fname_off = ctx->__data_loc_filename & 0xFFFF;
	bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), (void *)ctx + fname_off);

	bpf_ringbuf_submit(e, 0);
	return 0;
}
