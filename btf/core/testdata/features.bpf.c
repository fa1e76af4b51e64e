// SPDX-License-Identifier: GPL-2.0
/* features: programs whose kernel features differ between Linux 6.1 and
 * 6.12, for the report's feature checks and for the verifier's agreement
 * with them on real kernels:
 *   - tcx_pass needs the tcx attach type (BPF_TCX_INGRESS, Linux 6.6);
 *   - kern_ctx calls the kfunc bpf_cast_to_kern_ctx (Linux 6.2);
 *   - rcu_guarded calls the weak kfuncs bpf_rcu_read_lock/unlock (6.2)
 *     only after bpf_ksym_exists(), so it runs everywhere;
 *   - rcu_unguarded calls them unconditionally: the kernel must have them;
 *   - tc_pass needs nothing recent. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) ({ \
	_Static_assert(!__builtin_constant_p(!!sym), #sym " should be marked as __weak"); \
	!!sym; \
})
#endif

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;
extern void bpf_rcu_read_lock(void) __weak __ksym;
extern void bpf_rcu_read_unlock(void) __weak __ksym;

SEC("tcx/ingress")
int tcx_pass(struct __sk_buff *skb)
{
	return 0; /* TCX_PASS */
}

SEC("tc")
int tc_pass(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}

__u32 seen_len;

SEC("tc")
int kern_ctx(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	seen_len = kskb->len;
	return 0;
}

SEC("tc")
int rcu_guarded(struct __sk_buff *skb)
{
	if (bpf_ksym_exists(bpf_rcu_read_lock)) {
		bpf_rcu_read_lock();
		bpf_rcu_read_unlock();
	}
	return 0;
}

SEC("tc")
int rcu_unguarded(struct __sk_buff *skb)
{
	bpf_rcu_read_lock();
	bpf_rcu_read_unlock();
	return 0;
}
