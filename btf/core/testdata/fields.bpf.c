// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* fields: CO-RE field reads, for the relocation report and the
 * pre-relocated object tests.
 *
 * The tests build a second kernel by removing task_struct::sessionid from
 * the host's BTF: read_sessionid is then poisoned and unguarded,
 * read_sessionid_guarded poisoned and guarded. count_opens counts the
 * openat() calls of the process target_tgid, reading its tgid and its
 * parent's tgid with CO-RE. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

static __always_inline void store(u32 key, u64 val)
{
	u64 *slot = bpf_map_lookup_elem(&counts, &key);

	if (slot)
		*slot = val;
}

SEC("tp/syscalls/sys_enter_openat")
int count_opens(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u32 key = 0;
	u64 *cnt;

	if (BPF_CORE_READ(task, tgid) != target_tgid)
		return 0;
	cnt = bpf_map_lookup_elem(&counts, &key);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	store(1, BPF_CORE_READ(task, real_parent, tgid));
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int read_sessionid(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	store(2, BPF_CORE_READ(task, sessionid));
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int read_sessionid_guarded(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u64 sid = (u64)-1;

	if (bpf_core_field_exists(task->sessionid))
		sid = BPF_CORE_READ(task, sessionid);
	store(3, sid);
	return 0;
}
