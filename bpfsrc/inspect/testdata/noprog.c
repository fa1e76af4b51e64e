// SPDX-License-Identifier: GPL-2.0
// noprog.c declares a map and a global but forgets the SEC() on its only
// function, so the object has no programs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} counter SEC(".maps");

u64 calls;

int not_a_program(void *ctx)
{
	calls++;
	return 0;
}
