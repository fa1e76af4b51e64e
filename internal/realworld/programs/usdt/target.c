// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The USDT test target: a SystemTap probe bpfarm:tick with a semaphore
 * (enabled only while a tracer is attached) and three arguments: the
 * sequence number, a value kept in memory, a negative int. */
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>

unsigned short bpfarm_tick_semaphore __attribute__((section(".probes")));

static long work(long i)
{
	volatile long value[2] = {i * 100, i * 1000};
	if (bpfarm_tick_semaphore) {
		STAP_PROBE3(bpfarm, tick, i, value[1], (int)-i);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5, enabled = 0;
	for (long i = 1; i <= n; i++)
		enabled += work(i);
	printf("%ld\n", enabled);
	return 0;
}
