//go:build !linux

// Command bpfarm-verifier is the /init of bpfarm's verifier VMs; it runs
// on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bpfarm-verifier: Linux only")
	os.Exit(2)
}
