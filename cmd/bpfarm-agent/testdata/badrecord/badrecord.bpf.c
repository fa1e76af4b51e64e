// SPDX-License-Identifier: GPL-2.0
/* badrecord: for every getppid() of targ_tgid, a good record and one 4 bytes
 * short of its declared type, to check that a bad record is shown raw and
 * does not stop the stream. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpfarm.h>

char LICENSE[] SEC("license") = "GPL";

const volatile int targ_tgid = 0;

struct rec {
	__u32 seq;
	__u32 tgid;
	char tag[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");
BPFARM_RECORD(events, struct rec);

__u32 seq;

SEC("tp/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	struct rec r = {};

	r.tgid = bpf_get_current_pid_tgid() >> 32;
	if (r.tgid != targ_tgid)
		return 0;
	r.seq = seq++;	/* one writer: this test */
	__builtin_memcpy(r.tag, "good", 5);
	bpf_ringbuf_output(&events, &r, sizeof(r), 0);
	__builtin_memcpy(r.tag, "short", 6);
	bpf_ringbuf_output(&events, &r, sizeof(r) - 4, 0);
	return 0;
}
