#pragma once
#include "b.h"     /* inc/b.h, beside this file */
#include "maps.h"  /* not in inc/: found in the entry's directory */
#include <bpf/bpf_tracing.h>
