package core

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The benchmarks measure the farm's per-kernel cost against the tools it
// replaces, on the same object (execsnoop, the typical tracing example)
// and the same kernel BTF (the host's):
//
//	go test ./btf/core/ -run '^$' -bench . -benchtime 20x
//
// BenchmarkRelocate is the marginal cost of one more kernel once the
// kernel's BTF is parsed; BenchmarkLoadKernel the parse, paid once per
// kernel; BenchmarkRelocateColdKernel both, plus the lazy decoding of the
// types the first relocation touches. BenchmarkBpftoolMinCoreBTF and
// BenchmarkClangPerKernel are what bpftool gen min_core_btf and compiling
// once per kernel would cost instead.

const benchObject = "execsnoop"

func BenchmarkLoadKernel(b *testing.B) {
	f := setup(b)
	b.Run("host", func(b *testing.B) {
		b.SetBytes(int64(len(f.hostBTF)))
		for b.Loop() {
			if _, err := LoadKernel("host", f.hostBTF, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	if testing.Short() {
		return
	}
	b.Run("debian-6.12-with-modules", func(b *testing.B) {
		tk := debianKernel(b, "6.12")
		b.SetBytes(int64(tk.fullSize()))
		b.ReportMetric(float64(len(tk.modules)), "modules")
		for b.Loop() {
			if _, err := LoadKernel("debian", tk.vmlinux, tk.modules); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkKernelFeatures is the parse of a kernel's BPF enums (map,
// program and attach types, helpers) from its BTF, paid once per parsed
// kernel: each iteration parses a fresh kernel (untimed) and times only
// the features.
func BenchmarkKernelFeatures(b *testing.B) {
	f := setup(b)
	run := func(b *testing.B, vmlinux []byte, modules map[string][]byte) {
		for b.Loop() {
			b.StopTimer()
			k, err := LoadKernel("k", vmlinux, modules)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := k.features(k.state); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("host", func(b *testing.B) { run(b, f.hostBTF, nil) })
	if testing.Short() {
		return
	}
	b.Run("debian-6.12-with-modules", func(b *testing.B) {
		tk := debianKernel(b, "6.12")
		run(b, tk.vmlinux, tk.modules)
	})
}

func BenchmarkRelocateColdKernel(b *testing.B) {
	f := setup(b)
	o := f.object(b, benchObject)
	for b.Loop() {
		k, err := LoadKernel("host", f.hostBTF, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := o.Relocate(k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRelocate(b *testing.B) {
	f := setup(b)
	bpftoolSize := bpftoolMinSize(b, f, benchObject)
	for _, name := range f.names() {
		b.Run(name, func(b *testing.B) {
			o := f.object(b, name)
			res, err := o.Relocate(f.host) // warm: the kernel's types are decoded
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := o.Relocate(f.host); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(res.MinBTF)), "minbtf-bytes")
			b.ReportMetric(float64(len(f.hostBTF)), "full-btf-bytes")
			if name == benchObject {
				b.ReportMetric(float64(bpftoolSize), "bpftool-minbtf-bytes")
			}
		})
	}
}

// BenchmarkRelocateModules is BenchmarkRelocate against a kernel with
// module BTF (Debian 6.12, ~1100 modules): candidates are looked up in
// every module.
func BenchmarkRelocateModules(b *testing.B) {
	f := setup(b)
	if testing.Short() {
		b.Skip("Debian kernels are not imported with -short")
	}
	tk := debianKernel(b, "6.12")
	o := f.object(b, benchObject)
	res, err := o.Relocate(tk.k)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := o.Relocate(tk.k); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(res.MinBTF)), "minbtf-bytes")
	b.ReportMetric(float64(tk.fullSize()), "full-btf-bytes")
}

// bpftoolMinSize returns the size of bpftool gen min_core_btf's output.
func bpftoolMinSize(b *testing.B, f *fixture, name string) int {
	out := filepath.Join(b.TempDir(), "min.btf")
	if _, err := run(f.bpftool, "gen", "min_core_btf", "/sys/kernel/btf/vmlinux", out, f.paths[name]); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	return int(fi.Size())
}

func BenchmarkBpftoolMinCoreBTF(b *testing.B) {
	f := setup(b)
	out := filepath.Join(b.TempDir(), "min.btf")
	for b.Loop() {
		if _, err := run(f.bpftool, "gen", "min_core_btf", "/sys/kernel/btf/vmlinux", out, f.paths[benchObject]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClangPerKernel(b *testing.B) {
	f := setup(b)
	src := filepath.Join("..", "..", "examples", benchObject, benchObject+".bpf.c")
	out := filepath.Join(b.TempDir(), benchObject+".o")
	for b.Loop() {
		if _, err := run(f.clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
			"-I"+f.dir, "-I"+filepath.Dir(src), "-c", src, "-o", out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVersusTools times ours, bpftool and clang in one loop and
// reports how many times faster ours is.
func BenchmarkVersusTools(b *testing.B) {
	f := setup(b)
	o := f.object(b, benchObject)
	if _, err := o.Relocate(f.host); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	src := filepath.Join("..", "..", "examples", benchObject, benchObject+".bpf.c")
	var ours, bpftool, clang time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := o.Relocate(f.host); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)

		start = time.Now()
		if _, err := run(f.bpftool, "gen", "min_core_btf", "/sys/kernel/btf/vmlinux", filepath.Join(dir, "min.btf"), f.paths[benchObject]); err != nil {
			b.Fatal(err)
		}
		bpftool += time.Since(start)

		start = time.Now()
		if _, err := run(f.clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
			"-I"+f.dir, "-I"+filepath.Dir(src), "-c", src, "-o", filepath.Join(dir, "o.o")); err != nil {
			b.Fatal(err)
		}
		clang += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ours.Microseconds())/n, "ours-µs")
	b.ReportMetric(float64(bpftool.Microseconds())/n, "bpftool-µs")
	b.ReportMetric(float64(clang.Microseconds())/n, "clang-µs")
	b.ReportMetric(float64(bpftool)/float64(ours), "x-faster-than-bpftool")
	b.ReportMetric(float64(clang)/float64(ours), "x-faster-than-clang")
}

// BenchmarkFanout100 parses a kernel's BTF, registers it under 100 kernel
// IDs and relocates one object against all of them in parallel, GOMAXPROCS
// workers; it reports the wall time of the whole fan-out (parse included)
// and the process's peak RSS during it (which includes what the test
// binary holds anyway: the fixtures, and the Debian kernels once
// imported).
func BenchmarkFanout100(b *testing.B) {
	f := setup(b)
	b.Run("host", func(b *testing.B) { fanout(b, f, f.hostBTF, nil) })
	if testing.Short() {
		return
	}
	b.Run("debian-6.12-with-modules", func(b *testing.B) {
		tk := debianKernel(b, "6.12")
		fanout(b, f, tk.vmlinux, tk.modules)
	})
}

func fanout(b *testing.B, f *fixture, vmlinux []byte, modules map[string][]byte) {
	o := f.object(b, benchObject)
	var peak int64
	for b.Loop() {
		runtime.GC()
		resetPeakRSS()
		k, err := LoadKernel("kernel", vmlinux, modules)
		if err != nil {
			b.Fatal(err)
		}
		ids := make(chan *Kernel, 100)
		for i := range 100 {
			ids <- k.WithID(fmt.Sprintf("kernel-%03d", i))
		}
		close(ids)
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for k := range ids {
					res, err := o.Relocate(k)
					if err != nil {
						errs <- err
						continue
					}
					if res.Report.Kernel != k.ID || len(res.Relocated) == 0 || len(res.MinBTF) == 0 {
						errs <- fmt.Errorf("%s: bad result", k.ID)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		peak = max(peak, peakRSS())
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MB")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "workers")
}

// resetPeakRSS resets the kernel's peak RSS (VmHWM) of this process.
func resetPeakRSS() {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS returns the process's peak RSS in bytes (VmHWM).
func peakRSS() int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			fields := strings.Fields(string(rest))
			if len(fields) > 0 {
				kb, _ := strconv.ParseInt(fields[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
