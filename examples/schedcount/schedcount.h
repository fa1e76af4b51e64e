/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __SCHEDCOUNT_H
#define __SCHEDCOUNT_H

#define MAX_PIDS 10240

/* sched_stats is the value of the switches map, keyed by pid (thread id). */
struct sched_stats {
	__u64 switched_in;	/* times the thread got a CPU */
	__u64 preempted;	/* times it lost the CPU while still runnable */
};

#endif /* __SCHEDCOUNT_H */
