package core

import (
	"bytes"
	"os"
	"sort"
	"sync"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/bpfsrc/elfstrip"
	"github.com/bpfarm/bpfarm/internal/fuzzseed"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// The fuzz targets are seeded from real objects checked in as their
// corpus (testdata/fuzz/FuzzX/), written by TestWriteFuzzSeeds with
// BPFARM_WRITE_FUZZ_SEEDS=1: compiling the examples in every fuzz worker
// would take most of a bounded fuzzing run.

// fuzzSeedMax bounds the seed objects: the fuzzer spends its time
// minimizing large inputs instead of mutating them.
const fuzzSeedMax = 48 << 10

var (
	fuzzKernelOnce sync.Once
	fuzzKernel     *Kernel
	fuzzKernelErr  error
)

// hostKernel returns this host's kernel BTF, loaded once per process.
func hostKernel(tb testing.TB) *Kernel {
	tb.Helper()
	fuzzKernelOnce.Do(func() {
		raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
		if err != nil {
			fuzzKernelErr = err
			return
		}
		fuzzKernel, fuzzKernelErr = LoadKernel("host", raw, nil)
	})
	if fuzzKernelErr != nil {
		testenv.Require(tb, "kernel BTF", fuzzKernelErr.Error())
	}
	return fuzzKernel
}

// TestWriteFuzzSeeds writes the fuzz targets' seed corpus from the
// compiled examples and test objects (only with BPFARM_WRITE_FUZZ_SEEDS=1).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BPFARM_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set BPFARM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz from real objects")
	}
	fx := setup(t)
	for _, name := range fx.names() {
		// The farm stores objects without DWARF (bpfsrc/elfstrip): so
		// are the seeds.
		raw, err := elfstrip.StripDebug(fx.objs[name])
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > fuzzSeedMax {
			continue
		}
		o, err := LoadObject(raw)
		if err != nil {
			t.Fatal(err)
		}
		res, err := o.Relocate(fx.host)
		if err != nil {
			t.Fatal(err)
		}
		if err := fuzzseed.Write("FuzzRelocate", name, raw); err != nil {
			t.Fatal(err)
		}
		if err := fuzzseed.Write("FuzzMinimizedBTF", name, res.MinBTF); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzRelocate relocates hostile objects (publishers control every byte
// of .BTF and .BTF.ext through asm) against this host's kernel: it must
// never panic, and the minimized BTF it builds must parse.
func FuzzRelocate(f *testing.F) {
	k := hostKernel(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		o, err := LoadObject(raw)
		if err != nil {
			return
		}
		res, err := o.Relocate(k)
		if err != nil {
			return
		}
		if _, err := btf.LoadSpecFromReader(bytes.NewReader(res.MinBTF)); err != nil {
			t.Fatalf("minimized BTF does not parse: %v", err)
		}
	})
}

// FuzzMinimizedBTF builds minimized BTF against hostile kernel BTF (a
// host's upload is hostile too), for the seed objects of FuzzRelocate:
// seeded with their minimized BTF, it must never panic, and what it
// builds must parse.
func FuzzMinimizedBTF(f *testing.F) {
	seeds, err := fuzzseed.Read("FuzzRelocate")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("seed objects: %v (%d)", err, len(seeds))
	}
	names := make([]string, 0, len(seeds))
	for n := range seeds {
		names = append(names, n)
	}
	sort.Strings(names)
	var objs []*Object
	for _, n := range names {
		o, err := LoadObject(seeds[n])
		if err != nil {
			f.Fatalf("seed object %s: %v", n, err)
		}
		objs = append(objs, o)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		k, err := LoadKernel("fuzz", raw, nil)
		if err != nil {
			return
		}
		for _, o := range objs {
			res, err := o.Relocate(k)
			if err != nil {
				continue
			}
			if _, err := btf.LoadSpecFromReader(bytes.NewReader(res.MinBTF)); err != nil {
				t.Fatalf("minimized BTF does not parse: %v", err)
			}
		}
	})
}
