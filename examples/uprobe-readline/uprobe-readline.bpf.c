// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* uprobe-readline: capture the lines interactive bash shells read.
 *
 * Uprobes use the kprobe calling-convention macros: BPF_KPROBE and
 * BPF_KRETPROBE from bpf_tracing.h (libbpf >= 1.2 also names them
 * BPF_UPROBE/BPF_URETPROBE). They read pt_regs for the architecture given by
 * -D__TARGET_ARCH_x86. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_COMM_LEN 16
#define MAX_LINE_SIZE 80

struct line {
	int pid;
	char comm[TASK_COMM_LEN];
	char str[MAX_LINE_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} lines SEC(".maps");

/* Seen on entry: readline(prompt) is about to read a line. */
u64 calls;

SEC("uprobe//bin/bash:readline")
int BPF_KPROBE(readline_entry, const char *prompt)
{
	__sync_fetch_and_add(&calls, 1);
	return 0;
}

SEC("uretprobe//bin/bash:readline")
int BPF_KRETPROBE(readline_return, const char *ret)
{
	struct line *l;

	if (!ret)
		return 0;

	l = bpf_ringbuf_reserve(&lines, sizeof(*l), 0);
	if (!l)
		return 0;
	l->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&l->comm, sizeof(l->comm));
	bpf_probe_read_user_str(&l->str, sizeof(l->str), ret);
	bpf_ringbuf_submit(l, 0);
	return 0;
}
