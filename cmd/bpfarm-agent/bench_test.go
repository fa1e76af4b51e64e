package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// maxRSSMB is a finished command's peak resident set size.
func maxRSSMB(cmd *exec.Cmd) float64 {
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return float64(ru.Maxrss) / 1024 // kilobytes on Linux
}

// benchPrograms are the programs the agent benchmarks load: execsnoop (a
// tracepoint), and schedcount, whose tp_btf program makes cilium/ebpf parse
// the kernel's BTF (~15 ms) to find its attach target.
var benchPrograms = []string{"execsnoop", "schedcount"}

// benchFarm is a server holding the bench programs, built and relocated
// for this host's kernel, and the environment of an agent with a reader
// token.
func benchFarm(b *testing.B) (*farm, []string) {
	f := startFarm(b)
	if r := f.cli("kernels", "import", "--host"); r.code != 0 {
		b.Fatalf("import host: %s", r.stderr)
	}
	for _, p := range benchPrograms {
		if r := f.cli("push", "../../examples/"+p, "--wait"); r.code != 0 {
			b.Fatalf("push %s: %s", p, r.stderr)
		}
	}
	r := f.cli("tokens", "create", "--role", "reader", "--name", "bench")
	return f, []string{"PATH=/nonexistent", "HOME=" + b.TempDir(), "BPFARM_SERVER=" + f.url, "BPFARM_TOKEN=" + strings.TrimSpace(r.stdout)}
}

// BenchmarkAgentLoad: from starting bpfarm-agent to the program attached
// (the process exits once it is), with the artifact built on the server
// and the signing key pinned: resolve, download, verify, load, attach, pin.
func BenchmarkAgentLoad(b *testing.B) {
	_, env := benchFarm(b)
	for _, p := range benchPrograms {
		b.Run(p, func(b *testing.B) { benchAgentLoad(b, env, p) })
	}
}

func benchAgentLoad(b *testing.B, env []string, name string) {
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-bench-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	flags := []string{"--pin-dir", pin, "--state-dir", b.TempDir(), "--cache-dir", b.TempDir()}
	// First load pins the key (trust on first use) and warms the server.
	first := exec.Command(bin.agent, append([]string{"load", name}, flags...)...)
	first.Env = env
	if out, err := first.CombinedOutput(); err != nil {
		b.Fatalf("first load: %v %s", err, out)
	}
	if out, err := exec.Command(bin.agent, append([]string{"unload", name}, flags...)...).CombinedOutput(); err != nil {
		b.Fatalf("unload: %v %s", err, out)
	}
	var peak float64
	for b.Loop() {
		cmd := exec.Command(bin.agent, append([]string{"load", name}, flags...)...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			b.Fatalf("load: %v %s", err, out.String())
		}
		peak = max(peak, maxRSSMB(cmd))
		b.StopTimer()
		un := exec.Command(bin.agent, append([]string{"unload", name}, flags...)...)
		un.Env = env
		if out, err := un.CombinedOutput(); err != nil {
			b.Fatalf("unload: %v %s", err, out)
		}
		b.StartTimer()
	}
	b.ReportMetric(peak, "peak-rss-MB")
}

// BenchmarkHostCompileLoad is the host-side path bpfarm replaces (what BCC
// and compile-on-host tools do): clang-19 compiles the same source against
// a vmlinux.h, then libbpf (bpftool prog loadall) loads it.
func BenchmarkHostCompileLoad(b *testing.B) {
	for _, p := range benchPrograms {
		b.Run(p, func(b *testing.B) { benchHostCompileLoad(b, p) })
	}
}

func benchHostCompileLoad(b *testing.B, name string) {
	for _, tool := range []string{"clang-19", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	dir := b.TempDir()
	vmlinux, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").Output()
	if err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "vmlinux.h"), vmlinux, 0o644)
	src, _ := filepath.Abs("../../examples/" + name)
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-bench-host-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	var peak float64
	for b.Loop() {
		cc := exec.Command("clang-19", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I"+dir, "-I"+src,
			"-c", filepath.Join(src, name+".bpf.c"), "-o", filepath.Join(dir, "p.o"))
		if out, err := cc.CombinedOutput(); err != nil {
			b.Fatalf("clang: %v %s", err, out)
		}
		ld := exec.Command("bpftool", "prog", "loadall", filepath.Join(dir, "p.o"), pin) // (Debian's bpftool 7.1 cannot autoattach: load only, which favours this path)
		if out, err := ld.CombinedOutput(); err != nil {
			b.Fatalf("bpftool: %v %s", err, out)
		}
		peak = max(peak, maxRSSMB(cc), maxRSSMB(ld))
		b.StopTimer()
		os.RemoveAll(pin)
		b.StartTimer()
	}
	b.ReportMetric(peak, "peak-rss-MB")
}

// BenchmarkAgentBinary reports the release build's size (stripped, static).
func BenchmarkAgentBinary(b *testing.B) {
	out := filepath.Join(b.TempDir(), "bpfarm-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build: %v %s", err, o)
	}
	st, _ := os.Stat(out)
	for b.Loop() {
	}
	b.ReportMetric(float64(st.Size())/(1<<20), "binary-MB")
}

// BenchmarkAgentDaemonRSS runs `bpfarm-agent run` with one assignment and
// reports its resident set once the program is loaded and the daemon idles.
func BenchmarkAgentDaemonRSS(b *testing.B) {
	f, _ := benchFarm(b)
	if r := f.cli("assign", "schedcount"); r.code != 0 {
		b.Fatalf("assign: %s", r.stderr)
	}
	dir := b.TempDir()
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-bench-daemon-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	token := enrollBenchHost(b, f)
	cfg := fmt.Sprintf("server: %s\ntoken: %s\nname: bench-host\nstate_dir: %s\npin_dir: %s\nrun_dir: %s\n",
		f.url, token, filepath.Join(dir, "state"), pin, filepath.Join(dir, "run"))
	cfgPath := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	cmd := exec.Command(bin.agent, "run", "--config", cfgPath)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		exec.Command(bin.agent, "unload", "schedcount", "--pin-dir", pin, "--state-dir", filepath.Join(dir, "run")).Run()
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(pin, "schedcount")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon never loaded schedcount:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // idle: converged, long-polling
	var rss float64
	for b.Loop() {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				rss = kb / 1024
			}
		}
	}
	b.ReportMetric(rss, "rss-MB")
}

// exportMaps are the maps of testdata/exportbench the export benchmark
// exports: eight of per-flow counters, two of log2 histograms.
var exportMaps = []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "h0", "h1"}

// exportEntries is how many entries the benchmark puts in each map.
const exportEntries = 10000

// BenchmarkAgentExportRSS runs `bpfarm-agent run` exporting 10 maps of 10k
// entries each (8 × 10k flows with two counters, 2 × 10k log2 histograms
// of 16 slots: 340k series a scrape) on its /metrics, scrapes it once per
// iteration, and reports the daemon's resident set after the scrapes and
// its peak (VmHWM), with the series and bytes of a scrape.
func BenchmarkAgentExportRSS(b *testing.B) {
	f, _ := benchFarm(b)
	if r := f.cli("push", "testdata/exportbench", "--wait"); r.code != 0 {
		b.Fatalf("push exportbench: %s", r.stderr)
	}
	args := []string{"assign", "exportbench"}
	for _, m := range exportMaps {
		args = append(args, "--export", m)
	}
	if r := f.cli(args...); r.code != 0 {
		b.Fatalf("assign: %s", r.stderr)
	}
	dir := b.TempDir()
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-bench-export-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	token := enrollBenchHost(b, f)
	cfg := fmt.Sprintf("server: %s\ntoken: %s\nname: bench-host\nstate_dir: %s\npin_dir: %s\nrun_dir: %s\nmetrics_addr: %s\n",
		f.url, token, filepath.Join(dir, "state"), pin, filepath.Join(dir, "run"), addr)
	cfgPath := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	cmd := exec.Command(bin.agent, "run", "--config", cfgPath)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		exec.Command(bin.agent, "unload", "exportbench", "--pin-dir", pin, "--state-dir", filepath.Join(dir, "run")).Run()
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(pin, "exportbench", "maps", "h1")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon never loaded exportbench:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fillExportMaps(b, filepath.Join(pin, "exportbench", "maps"))

	scrape := func() (series int, size int64) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			size += int64(len(line)) + 1
			if bytes.HasPrefix(line, []byte("bpf_")) {
				series++
			}
		}
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
		return series, size
	}
	// Wait for the exports to be in place (the daemon converges, then
	// serves them).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if n, _ := scrape(); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon never exported the maps:\n%s", log.String())
		}
	}
	var (
		series int
		size   int64
	)
	for b.Loop() {
		series, size = scrape()
	}
	const want = 8*exportEntries*2 + 2*exportEntries*(16+2)
	if series != want {
		b.Fatalf("a scrape has %d lines of exported series, want %d", series, want)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			b.ReportMetric(kb/1024, "rss-MB")
		case "VmHWM:":
			b.ReportMetric(kb/1024, "peak-rss-MB")
		}
	}
	b.ReportMetric(float64(series), "series-lines")
	b.ReportMetric(float64(size)/(1<<20), "scrape-MB")
}

// fillExportMaps puts exportEntries entries in each exported map, through
// its pin.
func fillExportMaps(b *testing.B, dir string) {
	type flowKey struct{ PID, CPU uint32 }
	type flowStats struct{ Packets, Bytes uint64 }
	fk := make([]flowKey, exportEntries)
	fv := make([]flowStats, exportEntries)
	hk := make([]uint32, exportEntries)
	hv := make([][16]uint32, exportEntries)
	for i := range exportEntries {
		fk[i] = flowKey{PID: uint32(1000 + i/2), CPU: uint32(i % 2)}
		fv[i] = flowStats{Packets: uint64(i), Bytes: uint64(i) * 1500}
		hk[i] = uint32(i)
		for s := range 16 {
			hv[i][s] = uint32((i + s) % 7)
		}
	}
	for _, name := range exportMaps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			b.Fatal(err)
		}
		if name[0] == 'c' {
			_, err = m.BatchUpdate(fk, fv, nil)
		} else {
			_, err = m.BatchUpdate(hk, hv, nil)
		}
		m.Close()
		if err != nil {
			b.Fatalf("fill %s: %v", name, err)
		}
	}
}

// enrollBenchHost enrolls the daemon benchmarks' host and returns its
// token: only a host's own token may register it.
func enrollBenchHost(b *testing.B, f *farm) string {
	r := f.cli("hosts", "enroll", "bench-host")
	if r.code != 0 {
		b.Fatalf("enroll: %s", r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}
