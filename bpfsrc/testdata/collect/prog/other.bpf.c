#include "maps.h"
char LICENSE[] SEC("license") = "GPL";
