// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* newlibbpf: macros that libbpf-dev 1.1 lacks and newer libbpf has, as
 * real-world tools use them: BPF_UPROBE/BPF_URETPROBE (libbpf >= 1.2) and
 * bpf_ksym_exists() (libbpf >= 1.2). It builds only with a newer libbpf
 * header set. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A kfunc kernels since 6.2 have, and one no kernel has: bpf_ksym_exists()
 * tells them apart at load time (a weak __ksym left unresolved is zero). */
extern void bpf_rcu_read_lock(void) __ksym __weak;
extern void bpfarm_no_such_kfunc(void) __ksym __weak;

u64 calls;
u64 returns;
u64 has_rcu_lock;
u64 has_missing;

SEC("uprobe")
int BPF_UPROBE(getpid_entry)
{
	__sync_fetch_and_add(&calls, 1);
	has_rcu_lock = bpf_ksym_exists(bpf_rcu_read_lock);
	has_missing = bpf_ksym_exists(bpfarm_no_such_kfunc);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(getpid_return, int ret)
{
	if (ret > 0)
		__sync_fetch_and_add(&returns, 1);
	return 0;
}
