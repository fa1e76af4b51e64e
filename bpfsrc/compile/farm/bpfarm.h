/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * bpfarm.h: declarations the bpfarm build farm reads from a program's BTF.
 * Provided by the farm: #include <bpfarm.h>.
 */
#ifndef __BPFARM_H
#define __BPFARM_H

/*
 * BPFARM_RECORD(map, type) names the type of the records a program writes
 * into a ring buffer or perf event array map, so that `bpfarm-agent events`
 * decodes them, e.g.
 *
 *	struct {
 *		__uint(type, BPF_MAP_TYPE_RINGBUF);
 *		__uint(max_entries, 256 * 1024);
 *	} events SEC(".maps");
 *	BPFARM_RECORD(events, struct event);
 *
 * It declares a pointer to the type in the ".bpfarm.records" section, which
 * no loader loads (libbpf and cilium/ebpf skip sections they do not know):
 * it exists only in the object's BTF and costs nothing at run time. Without
 * it the farm infers the type from the program's output calls.
 */
#define BPFARM_RECORD(map, type)						\
	const type *__bpfarm_record__##map					\
	__attribute__((section(".bpfarm.records"), used))

#endif /* __BPFARM_H */
