/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __EXECSNOOP_H
#define __EXECSNOOP_H

#define TASK_COMM_LEN 16
#define MAX_FILENAME_LEN 128
#define MAX_ARGS 4
#define ARG_LEN 64

/* event is what handle_exec sends to user space for every exec(). */
struct event {
	int pid;
	int ppid;
	unsigned int uid;
	char comm[TASK_COMM_LEN];
	char filename[MAX_FILENAME_LEN];
	/* The first MAX_ARGS arguments, argv[0] first, each cut at ARG_LEN-1. */
	char args[MAX_ARGS][ARG_LEN];
};

#endif /* __EXECSNOOP_H */
