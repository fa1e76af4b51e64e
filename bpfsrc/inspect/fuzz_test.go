package inspect

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/bpfsrc/elfstrip"
	"github.com/bpfarm/bpfarm/internal/fuzzseed"
)

// TestWriteFuzzSeeds writes FuzzInspect's seed corpus (testdata/fuzz)
// from the test objects, compiled, without DWARF as the farm stores them
// (only with BPFARM_WRITE_FUZZ_SEEDS=1): compiling them in every fuzz
// worker would take most of a bounded fuzzing run.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BPFARM_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set BPFARM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz from real objects")
	}
	srcs, err := filepath.Glob("testdata/*.c")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no testdata sources: %v", err)
	}
	for _, src := range srcs {
		name := strings.TrimSuffix(filepath.Base(src), ".c")
		obj, err := elfstrip.StripDebug(compile(t, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := fuzzseed.Write("FuzzInspect", name, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzInspect feeds Inspect objects derived from real ones (publishers
// control every byte of an object, .BTF and .BTF.ext included, through
// asm): it must never panic, and what it accepts must check and encode.
func FuzzInspect(f *testing.F) {
	f.Fuzz(func(t *testing.T, obj []byte) {
		o, err := Inspect(obj)
		if err != nil {
			return
		}
		_ = o.Check()
		if _, err := json.Marshal(o); err != nil {
			t.Fatalf("inspection does not encode: %v", err)
		}
	})
}
