// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* writesize: a log2 histogram of write() sizes, and write() calls counted
 * per process, in the style of libbpf-tools. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "writesize.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Only count writes of this process, 0: all. */
const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} write_sizes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct writer_key);
	__type(value, __u64);
} writes SEC(".maps");

/* Large writes, for user space to follow (not a map of values). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} big_writes SEC(".maps");

/* log2 and log2l as libbpf-tools' bits.bpf.h has them. */
static __always_inline __u64 log2(__u32 v)
{
	__u32 shift, r;

	r = (v > 0xFFFF) << 4; v >>= r;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u64 log2l(__u64 v)
{
	__u32 hi = v >> 32;

	if (hi)
		return log2(hi) + 32;
	return log2(v);
}

SEC("tp/syscalls/sys_enter_write")
int count_write(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 size = ctx->args[2], slot, one = 1, *cnt;
	struct writer_key w = {};
	struct hist *h;
	__u32 zero = 0;

	if (targ_tgid && tgid != targ_tgid)
		return 0;

	h = bpf_map_lookup_elem(&write_sizes, &zero);
	if (h) {
		slot = log2l(size);
		if (slot >= MAX_SLOTS)
			slot = MAX_SLOTS - 1;
		__sync_fetch_and_add(&h->slots[slot], 1);
	}

	w.tgid = tgid;
	bpf_get_current_comm(&w.comm, sizeof(w.comm));
	cnt = bpf_map_lookup_elem(&writes, &w);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	else
		bpf_map_update_elem(&writes, &w, &one, BPF_NOEXIST);

	if (size >= 1 << 20) {
		__u64 *e = bpf_ringbuf_reserve(&big_writes, sizeof(*e), 0);

		if (e) {
			*e = size;
			bpf_ringbuf_submit(e, 0);
		}
	}
	return 0;
}
