// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* kconfig: .kconfig externs as libbpf resolves them — typedefs (u32 is a
 * typedef of __u32, itself one of unsigned int), bools, tristates, ints,
 * char arrays, a __weak option no kernel has (zero) and libbpf's virtual
 * LINUX_ variables. A socket filter run with BPF_PROG_TEST_RUN copies the
 * values into .bss for the test to compare with the host's config. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern u32 LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig;
extern enum libbpf_tristate CONFIG_BPF_JIT __kconfig;
extern int CONFIG_HZ __kconfig;
extern u64 CONFIG_NR_CPUS __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig;
extern bool CONFIG_BPFARM_NO_SUCH_OPTION __kconfig __weak;

struct values {
	u32 kernel_version;
	u32 has_bpf_cookie;
	u32 bpf_syscall;
	u32 bpf_jit;
	u64 hz;
	u64 nr_cpus;
	u32 no_such_option;
	char hostname[16];
};

struct values values;

SEC("socket")
int record(struct __sk_buff *skb)
{
	values.kernel_version = LINUX_KERNEL_VERSION;
	values.has_bpf_cookie = LINUX_HAS_BPF_COOKIE;
	values.bpf_syscall = CONFIG_BPF_SYSCALL;
	values.bpf_jit = CONFIG_BPF_JIT;
	values.hz = CONFIG_HZ;
	values.nr_cpus = CONFIG_NR_CPUS;
	values.no_such_option = CONFIG_BPFARM_NO_SUCH_OPTION;
	__builtin_memcpy(values.hostname, CONFIG_DEFAULT_HOSTNAME, sizeof(values.hostname));
	return 0;
}
