// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* layout: CO-RE accesses through anonymous unions, arrays, arrays of
 * structs, flexible arrays, bitfields and mismatching local types, to check
 * the minimized BTF against the full BTF on the hard cases. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A local view of list_head that matches no kernel's. */
struct list_head___bad {
	int next;
} __attribute__((preserve_access_index));

u64 out[16];

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(skb_fields, struct sk_buff *skb)
{
	out[0] = BPF_CORE_READ(skb, cb[2]);
	out[1] = BPF_CORE_READ(skb, tstamp);		/* in an anonymous union */
	out[2] = BPF_CORE_READ(skb, dev, ifindex);
	out[3] = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
	out[4] = bpf_core_field_size(skb->cb);
	out[5] = bpf_core_field_offset(skb->len);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(task_fields, struct task_struct *p)
{
	struct list_head___bad *bad = (void *)&p->children;

	out[6] = BPF_CORE_READ(p, signal, rlim[7].rlim_cur);
	out[7] = (u64)BPF_CORE_READ(p, cgroups, dfl_cgrp, ancestors[1]);
	out[8] = bpf_core_type_matches(struct list_head___bad);
	out[9] = BPF_CORE_READ(bad, next);
	out[10] = bpf_core_type_size(struct rlimit);
	out[11] = bpf_core_enum_value(enum pid_type, PIDTYPE_SID);
	out[12] = bpf_core_type_exists(union bpf_attr);
	return 0;
}
