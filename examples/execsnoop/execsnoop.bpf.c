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

/* Name the records' type for `bpfarm-agent events` (BTF only, no run-time
 * cost: struct event is otherwise only the type of a local pointer, which
 * BTF does not describe). The farm provides <bpfarm.h>; elsewhere the
 * records are just not declared. */
#if __has_include(<bpfarm.h>)
#include <bpfarm.h>
BPFARM_RECORD(events, struct event);
#endif

SEC("tp/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task;
	unsigned long arg, arg_end;
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

	/* The new image's arguments: NUL-separated strings from
	 * mm->arg_start to mm->arg_end. */
	for (int i = 0; i < MAX_ARGS; i++)
		e->args[i][0] = '\0';	/* ring buffer memory is not zeroed */
	arg = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	for (int i = 0; i < MAX_ARGS; i++) {
		long n;

		if (arg >= arg_end)
			break;
		n = bpf_probe_read_user_str(e->args[i], ARG_LEN, (void *)arg);
		if (n <= 0)
			break;
		arg += n;
	}

	bpf_ringbuf_submit(e, 0);
	return 0;
}
