// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* net: network programs counting what they see: tcx, classic tc,
 * cgroup_skb, sk_lookup, and a socket filter. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TC_ACT_UNSPEC (-1) /* tcx: run the next program */
#define SK_PASS 1

u64 tcx_packets;
u64 tc_packets;
u64 cgroup_packets;
u64 lookups;

SEC("tcx/ingress")
int tcx_count(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&tcx_packets, 1);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&tc_packets, 1);
	return TC_ACT_UNSPEC;
}

SEC("cgroup_skb/egress")
int cgroup_egress(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&cgroup_packets, 1);
	return 1; /* allow */
}

SEC("sk_lookup")
int count_lookups(struct bpf_sk_lookup *ctx)
{
	__sync_fetch_and_add(&lookups, 1);
	return SK_PASS;
}

SEC("socket")
int socket_all(struct __sk_buff *skb)
{
	return skb->len;
}
