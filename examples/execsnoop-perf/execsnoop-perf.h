/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __EXECSNOOP_PERF_H
#define __EXECSNOOP_PERF_H

#define TASK_COMM_LEN 16
#define MAX_ARGS 6
#define ARG_LEN 64

/* event is what the exec tracer sends through the perf buffer, once
 * execve() returns. */
struct event {
	int pid;
	int ppid;
	unsigned int uid;
	int retval;		/* execve()'s return value: 0 or -errno */
	int args_count;
	char comm[TASK_COMM_LEN];
	char args[MAX_ARGS][ARG_LEN];	/* argv[0..MAX_ARGS) */
};

#endif /* __EXECSNOOP_PERF_H */
