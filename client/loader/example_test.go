package loader_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/bpfarm/bpfarm/client/loader"
)

// Example loads an artifact's files, as bpfarm-agent fetched them for this
// host's kernel: execsnoop, recording the execs of users 1000 and up.
// Everything stays loaded and attached after the program exits, until
// loader.Unload("execsnoop", opts).
func Example() {
	obj, err := os.ReadFile("execsnoop.bpf.o")
	if err != nil {
		log.Fatal(err)
	}
	minBTF, _ := os.ReadFile("execsnoop.min.btf")        // may be missing
	relocated, _ := os.ReadFile("execsnoop.relocated.o") // may be missing

	opts := loader.Options{Set: map[string]string{"min_uid": "1000"}}
	l, err := loader.Load(context.Background(), &loader.Artifact{
		Name:      "execsnoop",
		Revision:  "v1",
		Object:    obj,
		MinBTF:    minBTF,
		Relocated: relocated,
	}, opts)
	if err != nil {
		log.Fatal(err) // names each failing program, with the verifier log's tail
	}
	for _, p := range l.Programs {
		fmt.Printf("%s: %s (program %d, link %d)\n", p.Name, p.AttachPoint, p.ID, p.LinkID)
	}
	fmt.Println("events:", l.Map("events").Pinned)
}

// ExampleStatus lists the loaded sets.
func ExampleStatus() {
	sets, err := loader.Status(loader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range sets {
		fmt.Printf("%s %s (%s) since %s\n", s.Name, s.Revision, s.Mode, s.Since)
		for _, p := range s.Programs {
			fmt.Printf("  %s attached=%v %s runs=%d\n", p.Name, p.Attached, p.AttachPoint, p.RunCount)
		}
	}
}
