// SPDX-License-Identifier: GPL-2.0
/* isa: one program per kind of BPF ISA v4 instruction (Linux 6.6+; clang
 * emits them for -mcpu=v4, and assembles them from inline assembly
 * whatever its -mcpu), and two behind a CO-RE guard that only holds from
 * Linux 6.4 (struct bpf_iter_num): an older verifier prunes the guarded
 * branch, so it never sees the sign-extending mov (an old opcode with a new
 * offset, checked when reached) but still refuses the sign-extending load
 * (a new opcode, refused wherever it is). gotol alone went to stable
 * kernels (6.1.72+): Debian's 6.1 amd64 loads it (the report can't tell:
 * unknown), its arm64 JIT refuses it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp/syscalls/sys_enter_getpid")
int ldsx(void *ctx)
{
	char buf[8] = {};
	long x;

	buf[0] = bpf_get_prandom_u32();
	asm volatile("%0 = *(s8 *)(%1 + 0)" : "=r"(x) : "r"(buf));
	return x < 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int sdiv(void *ctx)
{
	long x = bpf_get_prandom_u32();

	asm volatile("%0 s/= 3" : "+r"(x));
	asm volatile("%0 s%%= 5" : "+r"(x));
	return x < 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int bswap(void *ctx)
{
	long x = bpf_get_prandom_u32();

	asm volatile("%0 = bswap16 %0" : "+r"(x));
	return x > 0xffff;
}

SEC("tp/syscalls/sys_enter_getpid")
int gotol(void *ctx)
{
	long x = bpf_get_prandom_u32() & 1;

	/* gotol +1, over an instruction reached by the other branch */
	asm volatile("if %0 == 0 goto +1\n\tgotol +1\n\t%0 = 2" : "+r"(x));
	return x;
}

SEC("tp/syscalls/sys_enter_getpid")
int guarded_movsx(void *ctx)
{
	long x = 0, y = bpf_get_prandom_u32();

	if (bpf_core_type_exists(struct bpf_iter_num))
		asm volatile("%0 = (s8)%1" : "=r"(x) : "r"(y));
	return x < 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int guarded_ldsx(void *ctx)
{
	char buf[8] = {};
	long x = 0;

	buf[0] = bpf_get_prandom_u32();
	if (bpf_core_type_exists(struct bpf_iter_num))
		asm volatile("%0 = *(s8 *)(%1 + 0)" : "=r"(x) : "r"(buf));
	return x < 0;
}
