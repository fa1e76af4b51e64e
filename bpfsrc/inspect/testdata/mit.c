// SPDX-License-Identifier: MIT
// mit.c calls a GPL-only helper under a non-GPL license: Check must reject
// handle_openat but not handle_close, which only uses GPL-free helpers.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "MIT";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_openat")
int handle_openat(struct trace_event_raw_sys_enter *ctx)
{
	char path[32];

	bpf_probe_read_kernel(path, sizeof(path), (void *)ctx->args[1]);
	bpf_ringbuf_output(&events, path, sizeof(path), 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_close")
int handle_close(void *ctx)
{
	u64 ts = bpf_ktime_get_ns();

	bpf_ringbuf_output(&events, &ts, sizeof(ts), 0);
	return 0;
}
