// Command bpfarm-agent is bpfarm's thin client and host daemon: it fetches
// the artifact built for this host's kernel and loads it with cilium/ebpf,
// with no compiler, kernel headers or BTF needed on the host.
//
// This entry point only reports its version for now; loading and the daemon
// arrive with the agent work (see the issue tracker).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println("bpfarm-agent (development build)")
		return
	}
	fmt.Fprintln(os.Stderr, "bpfarm-agent: not implemented yet: load, unload, status and run arrive with the agent issue")
	os.Exit(2)
}
