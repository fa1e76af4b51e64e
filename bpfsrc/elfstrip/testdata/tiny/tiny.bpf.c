// SPDX-License-Identifier: GPL-2.0
/* The smallest object with DWARF: no headers at all. */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

int counter;

SEC("xdp")
int pass(void *ctx)
{
	counter++;
	return 2; /* XDP_PASS */
}
