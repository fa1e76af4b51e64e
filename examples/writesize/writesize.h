/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __WRITESIZE_H
#define __WRITESIZE_H

#define MAX_SLOTS 32
#define TASK_COMM_LEN 16

/* hist is a log2 histogram, the libbpf-tools convention: slots[k] counts
 * the sizes s with 2^k <= s < 2^(k+1) (slot 0 counts 0 and 1). */
struct hist {
	__u32 slots[MAX_SLOTS];
};

/* writer_key keys the writes map: one counter per process and command. */
struct writer_key {
	__u32 tgid;
	char comm[TASK_COMM_LEN];
};

#endif /* __WRITESIZE_H */
