package compile

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// The benchmarks compile testdata/prog.bpf.c, a typical CO-RE program
// (tracepoints, ring buffer, vmlinux.h, bpf_helpers.h, bpf_core_read.h,
// bpf_tracing.h), the whole way a request goes: job directory, extraction,
// clang, reading the object.

func benchCompile(b *testing.B, c *Compiler, wantPCH bool) {
	prog := typicalProgram(b)
	req := Request{Bundle: prog, Arch: ArchX86_64}
	// Warm up: vmlinux.h, the precompiled header, the page cache.
	res, err := c.Compile(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	if res.UsedPCH != wantPCH {
		b.Fatalf("UsedPCH %v", res.UsedPCH)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := c.Compile(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileBare is clang on the host, parsing vmlinux.h: the
// baseline.
func BenchmarkCompileBare(b *testing.B) {
	benchCompile(b, newCompiler(b, func(cfg *Config) { cfg.NoSandbox = true }), false)
}

// BenchmarkCompileSandbox is clang in the sandbox, parsing vmlinux.h.
func BenchmarkCompileSandbox(b *testing.B) {
	benchCompile(b, newCompiler(b, nil), false)
}

// BenchmarkCompileSandboxPCH is clang in the sandbox with the precompiled
// vmlinux.h already built.
func BenchmarkCompileSandboxPCH(b *testing.B) {
	benchCompile(b, newCompiler(b, func(cfg *Config) { cfg.UsePCH = true }), true)
}

// BenchmarkCompileBarePCH is clang on the host with a precompiled
// vmlinux.h, for reference.
func BenchmarkCompileBarePCH(b *testing.B) {
	benchCompile(b, newCompiler(b, func(cfg *Config) { cfg.NoSandbox = true; cfg.UsePCH = true }), true)
}

// BenchmarkCompileSandboxPCHCold is the first compile after a new
// vmlinux.h: building the precompiled header, then compiling with it.
func BenchmarkCompileSandboxPCHCold(b *testing.B) {
	_, v := farm(b)
	path, _, err := v.VmlinuxH(context.Background(), ArchX86_64)
	if err != nil {
		b.Fatal(err)
	}
	prog := typicalProgram(b)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c := newCompiler(b, func(cfg *Config) {
			cfg.UsePCH = true
			cfg.Vmlinux = &copiedVmlinux{tb: b, src: path}
		})
		b.StartTimer()
		res, err := c.Compile(context.Background(), Request{Bundle: prog, Arch: ArchX86_64})
		if err != nil {
			b.Fatal(err)
		}
		if !res.UsedPCH {
			b.Fatal("precompiled header not used")
		}
	}
}

// TestMeasureAddressSpace finds the smallest address-space limit (to 16 MiB)
// the typical program compiles under, with and without the precompiled
// header. It only runs with BPFARM_MEASURE=1.
func TestMeasureAddressSpace(t *testing.T) {
	if os.Getenv("BPFARM_MEASURE") != "1" {
		t.Skip("set BPFARM_MEASURE=1 to measure")
	}
	prog := typicalProgram(t)
	for _, pch := range []bool{false, true} {
		// Build the header with room to spare.
		newCompiler(t, func(cfg *Config) { cfg.UsePCH = pch }).Compile(context.Background(), Request{Bundle: prog, Arch: ArchX86_64})
		lo, hi := int64(64), int64(1024) // MiB: lo fails, hi works
		for hi-lo > 16 {
			mid := (lo + hi) / 2
			h, v := farm(t)
			c, err := New(Config{Headers: h, Vmlinux: v, WorkDir: t.TempDir(), UsePCH: pch, AddressSpace: mid << 20, Timeout: 30 * time.Second})
			if err != nil { // clang does not even start
				lo = mid
				continue
			}
			res, err := c.Compile(context.Background(), Request{Bundle: prog, Arch: ArchX86_64})
			var ce *Error
			switch {
			case err == nil && res.UsedPCH == pch:
				hi = mid
			case err == nil || errors.As(err, &ce):
				lo = mid
			default:
				t.Fatal(err)
			}
		}
		t.Logf("PCH %v: compiles with an address space of %d MiB, not %d MiB", pch, hi, lo)
	}
}
