package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
	f, env := benchFarm(b)
	if r := f.cli("assign", "schedcount"); r.code != 0 {
		b.Fatalf("assign: %s", r.stderr)
	}
	dir := b.TempDir()
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-bench-daemon-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	token := strings.TrimPrefix(env[3], "BPFARM_TOKEN=")
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
