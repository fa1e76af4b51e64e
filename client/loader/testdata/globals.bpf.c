// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* globals: const volatile variables of every kind Options.Set handles, and
 * a writable global it refuses. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum level { LEVEL_LOW = 1, LEVEL_HIGH = 7 };

const volatile u8 g_u8 = 0;
const volatile s8 g_s8 = 0;
const volatile u16 g_u16 = 0;
const volatile s16 g_s16 = 0;
const volatile u32 g_u32 = 0;
const volatile int g_int = 0;
const volatile u64 g_u64 = 0;
const volatile s64 g_s64 = 0;
const volatile bool g_bool = false;
const volatile enum level g_level = LEVEL_LOW;
const volatile char g_name[8] = "";
const volatile struct { int a; } g_struct = {};

u64 counter;

SEC("tp/syscalls/sys_enter_getpid")
int use_globals(void *ctx)
{
	counter += g_u8 + g_s8 + g_u16 + g_s16 + g_u32 + g_int + g_u64 + g_s64 +
		   g_bool + g_level + g_name[0] + g_struct.a;
	return 0;
}
