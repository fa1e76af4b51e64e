package observe_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/client/observe"
)

// Follow what execsnoop (loaded with `bpfarm-agent load execsnoop`) reports,
// as generic values: every record printed as JSON.
func Example() {
	set, err := observe.Open("execsnoop", loader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	events, err := set.Events(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer events.Close()
	for {
		ev, err := events.Next()
		if err != nil {
			log.Fatal(err)
		}
		line, err := ev.AppendJSON(nil)
		if err != nil {
			log.Printf("%s: %v", ev.Map.Name, err) // e.g. a record of the wrong size
			continue
		}
		fmt.Println(string(line))
	}
}

// Records into a type of the program's own.
func ExampleAs() {
	type event struct {
		PID, PPID, UID uint32
		Comm           [16]byte
		Filename       [128]byte
		Args           [4][64]byte
	}
	set, err := observe.Open("execsnoop", loader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	events, err := set.Events(context.Background(), "events")
	if err != nil {
		log.Fatal(err)
	}
	defer events.Close()
	ev, err := events.Next()
	if err != nil {
		log.Fatal(err)
	}
	e, err := observe.As[event](ev)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.PID)
}

// A map's entries, decoded: runqlat's per-process histograms as charts.
func ExampleMap_Entries() {
	set, err := observe.Open("runqlat", loader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	hists, err := set.Map("hists")
	if err != nil {
		log.Fatal(err)
	}
	entries, err := hists.Entries()
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		fmt.Println(decode.FormatValue(e.Key))
		if h, ok := observe.Histogram(e.Value); ok {
			os.Stdout.Write(decode.AppendHistogram(nil, h, "usecs"))
		}
	}
}

// A map into Go types.
func ExampleEntriesAs() {
	type key struct {
		TGID uint32
		Comm [16]byte
	}
	type hist struct{ Slots [26]uint32 }
	set, err := observe.Open("runqlat", loader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	m, err := set.Map("hists")
	if err != nil {
		log.Fatal(err)
	}
	byProcess, err := observe.EntriesAs[key, hist](m)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(byProcess))
}
