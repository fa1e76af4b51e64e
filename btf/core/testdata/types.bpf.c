// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* types: enum value, type-based and bitfield CO-RE relocations. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Exists in no kernel. */
enum bpfarm_missing {
	BPFARM_MISSING_VALUE = 7,
};

struct bpfarm_missing_struct {
	int field;
};

u64 out[8];

SEC("raw_tp/sys_enter")
int enums(void *ctx)
{
	out[0] = bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_ringbuf_output);
	if (bpf_core_enum_value_exists(enum bpfarm_missing, BPFARM_MISSING_VALUE))
		out[1] = bpf_core_enum_value(enum bpfarm_missing, BPFARM_MISSING_VALUE);
	return 0;
}

SEC("raw_tp/sys_enter")
int types(void *ctx)
{
	if (bpf_core_type_exists(struct bpf_ringbuf))
		out[2] = bpf_core_type_size(struct bpf_ringbuf);
	if (bpf_core_type_exists(struct bpfarm_missing_struct))
		out[3] = bpf_core_type_size(struct bpfarm_missing_struct);
	out[4] = bpf_core_type_matches(struct list_head);
	out[5] = bpf_core_type_id_kernel(struct task_struct);
	return 0;
}

SEC("tp_btf/sched_switch")
int bitfields(u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[1];

	out[6] = BPF_CORE_READ_BITFIELD_PROBED(task, in_iowait);
	out[7] = __builtin_preserve_field_info(task->prio, BPF_FIELD_SIGNED);
	return 0;
}
