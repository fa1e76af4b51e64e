// SPDX-License-Identifier: GPL-2.0
/* newer: one program that every kernel accepts, and one that uses a cpu v4
 * instruction (a sign-extending move, BPF_MOV with offset 8: Linux 6.6+),
 * which older verifiers reject ("BPF_MOV uses reserved fields"). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, s64);
} last SEC(".maps");

SEC("tp/syscalls/sys_enter_getpid")
int plain(void *ctx)
{
	u32 k = 0;
	s64 *v = bpf_map_lookup_elem(&last, &k);

	if (v)
		*v = (s8)bpf_get_prandom_u32();
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int sext(void *ctx)
{
	u32 k = 0;
	u64 r = bpf_get_prandom_u32();
	s64 x, *v;

	/* r0 = (s8)r1: movsx, which clang emits only for -mcpu=v4. */
	asm volatile("%0 = (s8)%1" : "=r"(x) : "r"(r));
	v = bpf_map_lookup_elem(&last, &k);
	if (v)
		*v = x;
	return 0;
}

/* Open-coded iterators (bpf_for, Linux 6.4): kfuncs that 6.1 lacks. */
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __weak __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __weak __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __weak __ksym;

SEC("tp/syscalls/sys_enter_getuid")
int iter(void *ctx)
{
	struct bpf_iter_num it;
	u32 k = 0;
	s64 sum = 0, *v;
	int *i;

	bpf_iter_num_new(&it, 0, 10);
	while ((i = bpf_iter_num_next(&it)))
		sum += *i;
	bpf_iter_num_destroy(&it);
	v = bpf_map_lookup_elem(&last, &k);
	if (v)
		*v = sum;
	return 0;
}
