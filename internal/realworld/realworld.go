// Package realworld holds BPF programs written the way widely used CO-RE
// tools write them, beyond what examples/ shows: newer libbpf macros
// (programs/newlibbpf: BPF_UPROBE/BPF_URETPROBE, bpf_ksym_exists), USDT
// probes (programs/usdt: usdt.bpf.h, BPF_USDT) and .kconfig externs
// (programs/kconfig: typedefs, tristates, char arrays, __weak, libbpf's
// LINUX_ variables). Tests build them on the farm and load them with the
// agent and with bpftool.
package realworld

// Program is one program under programs/.
type Program struct {
	// Name is its directory under programs/ and its entry's base name.
	Name string
	// NeedsNewLibbpf is set when the program builds only with a libbpf
	// header set newer than Debian 12's libbpf-dev 1.1.
	NeedsNewLibbpf bool
	// NeedsTarget is set when the program's USDT section names a binary:
	// compile it with -DTARGET='"/abs/path"'.
	NeedsTarget bool
}

// Programs are the programs under programs/.
var Programs = []Program{
	{Name: "newlibbpf", NeedsNewLibbpf: true},
	{Name: "usdt", NeedsTarget: true},
	{Name: "kconfig"},
}
