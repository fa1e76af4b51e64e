// SPDX-License-Identifier: GPL-2.0
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <linux/bpf.h>
#include "maps.h"
  # include   "inc/a.h"   // a comment after the directive
#include <util.h> /* bracketed, found beside the entry */
#include "../common.h"
/* #include "ghost.h" is commented out
#include "ghost.h"
*/
// #include "ghost.h"
#include \
	"cont.h"
#define HDR "unused.h"
#include HDR

static const char blob[] = {
#embed "blob.bin"
};

char LICENSE[] SEC("license") = "GPL";
