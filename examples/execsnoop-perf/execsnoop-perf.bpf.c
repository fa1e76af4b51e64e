// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* execsnoop-perf: an exec tracer in the style of libbpf-tools' execsnoop.
 * sys_enter_execve saves the arguments in the execs map, keyed by pid;
 * sys_exit_execve completes the event and sends it through the events perf
 * buffer. The record type needs no declaration: the farm infers it, as the
 * data passed to bpf_perf_event_output is a value of execs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "execsnoop-perf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile bool ignore_failed = true;	/* drop failed execs */

static const struct event empty_event;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, pid_t);
	__type(value, struct event);
} execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_execve")
int tracepoint__syscalls__sys_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	const char **argv = (const char **)ctx->args[1];
	struct task_struct *task;
	struct event *e;
	pid_t pid;

	pid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_update_elem(&execs, &pid, &empty_event, BPF_NOEXIST))
		return 0;
	e = bpf_map_lookup_elem(&execs, &pid);
	if (!e)
		return 0;

	task = (struct task_struct *)bpf_get_current_task();
	e->pid = pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (u32)bpf_get_current_uid_gid();

	for (int i = 0; i < MAX_ARGS; i++) {
		const char *arg = NULL;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		if (bpf_probe_read_user_str(e->args[i], ARG_LEN, arg) <= 0)
			break;
		e->args_count++;
	}
	return 0;
}

SEC("tp/syscalls/sys_exit_execve")
int tracepoint__syscalls__sys_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	struct event *e;
	pid_t pid;
	int ret;

	pid = bpf_get_current_pid_tgid() >> 32;
	e = bpf_map_lookup_elem(&execs, &pid);
	if (!e)
		return 0;
	ret = ctx->ret;
	if (ignore_failed && ret < 0)
		goto cleanup;
	e->retval = ret;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
cleanup:
	bpf_map_delete_elem(&execs, &pid);
	return 0;
}
