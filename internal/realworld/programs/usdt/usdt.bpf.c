// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* usdt: a SystemTap/USDT probe handler (usdt.bpf.h, BPF_USDT). It counts
 * hits of bpfarm:tick in the binary TARGET and records the probe's
 * arguments: a constant, a register, a memory operand and a negative value.
 * TARGET is the binary's absolute path, e.g. -DTARGET='"/usr/bin/app"'. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

#ifndef TARGET
#define TARGET "/usr/local/bin/usdt-target"
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

u64 hits;
s64 last_seq;
s64 last_value;
s64 last_neg;
s64 arg_count;
s64 sum_seq;

SEC("usdt/" TARGET ":bpfarm:tick")
int BPF_USDT(tick, long seq, long value, int neg)
{
	__sync_fetch_and_add(&hits, 1);
	__sync_fetch_and_add(&sum_seq, seq);
	last_seq = seq;
	last_value = value;
	last_neg = neg;
	arg_count = bpf_usdt_arg_cnt(ctx);
	return 0;
}
