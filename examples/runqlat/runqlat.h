/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __RUNQLAT_H
#define __RUNQLAT_H

#define TASK_COMM_LEN 16
#define MAX_SLOTS 26

/* hist is a log2 histogram of run-queue latencies in microseconds:
 * slots[i] counts latencies in [2^i, 2^(i+1)), slots[0] also 0 (the
 * libbpf-tools convention, which `bpfarm-agent maps` prints as a chart). */
struct hist {
	__u32 slots[MAX_SLOTS];
};

/* hkey keys the per-process histograms. */
struct hkey {
	__u32 tgid;
	char comm[TASK_COMM_LEN];
};

#endif /* __RUNQLAT_H */
