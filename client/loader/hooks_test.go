//go:build linux

package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// waitFor polls cond until it holds or a generous deadline passes (the
// events it waits for are asynchronous, like softirq packet processing).
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// sendUDP sends n datagrams to a UDP socket on 127.0.0.1 of the current
// network namespace.
func sendUDP(t *testing.T, n int) {
	t.Helper()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	conn, err := net.DialUDP("udp4", nil, sink.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range n {
		if _, err := conn.Write([]byte("bpfarm")); err != nil {
			t.Fatal(err)
		}
	}
}

// protoCount sums xdpcount's per-CPU counter of IP protocol proto.
func protoCount(t *testing.T, l *Loaded, proto uint32) uint64 {
	t.Helper()
	var perCPU []uint64
	if err := pinnedMap(t, l, "proto_count").Lookup(proto, &perCPU); err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum
}

// TestXDP attaches xdpcount to lo (generic mode) in a network namespace of
// its own, counts UDP packets, and swaps it for a new revision, which
// updates the XDP link in place.
func TestXDP(t *testing.T) {
	inNewNetns(t)
	a := artifact(t, "xdpcount")
	opt := testOptions(t)
	if _, err := tryLoad(t, artifact(t, "xdpcount"), opt); err == nil || !strings.Contains(err.Error(), "xdp programs need an interface (Attach.Interface)") {
		t.Errorf("xdp without interface: %v", err)
	}

	opt.Attach = AttachOptions{Interface: "lo", XDPMode: "generic"}
	l := load(t, a, opt)
	checkAttached(t, l, map[string]string{"xdp_count": "xdp lo (generic)"})

	const udp = 17
	sendUDP(t, 5)
	if !waitFor(func() bool { return protoCount(t, l, udp) >= 5 }) {
		t.Fatalf("proto_count[UDP] = %d, want >= 5", protoCount(t, l, udp))
	}

	b := artifact(t, "xdpcount")
	b.Revision = "r2"
	old := l.Programs[0]
	l2, err := Swap(t.Context(), l, b, opt)
	if err != nil {
		t.Fatalf("Swap: %v", err)
	}
	p := l2.Programs[0]
	if p.LinkID != old.LinkID || p.ID == old.ID || !p.Attached {
		t.Errorf("after swap: link %d (was %d), program %d (was %d), attached %v: want the same link running the new program",
			p.LinkID, old.LinkID, p.ID, old.ID, p.Attached)
	}
	if l2.Revision != "r2" {
		t.Errorf("revision %q", l2.Revision)
	}
	before := protoCount(t, l2, udp)
	if before < 5 {
		t.Errorf("the map was not carried over: proto_count[UDP] = %d", before)
	}
	sendUDP(t, 3)
	if !waitFor(func() bool { return protoCount(t, l2, udp) >= before+3 }) {
		t.Errorf("after swap: proto_count[UDP] = %d, want >= %d", protoCount(t, l2, udp), before+3)
	}
	gone := waitFor(func() bool {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(old.ID))
		if err != nil {
			return true
		}
		p.Close()
		return false
	})
	if !gone {
		t.Errorf("the old program %d is still loaded", old.ID)
	}
}

// TestTCX attaches tcx/ingress and plain tc programs to lo in a network
// namespace of its own, and checks that both count packets.
func TestTCX(t *testing.T) {
	inNewNetns(t)
	a := artifact(t, "net")
	opt := testOptions(t)
	opt.Programs = []string{"tcx_count", "tc_count"}
	opt.Attach.Interface = "lo"
	l := load(t, a, opt)
	checkAttached(t, l, map[string]string{"tcx_count": "tcx lo ingress", "tc_count": "tcx lo ingress"})
	sendUDP(t, 4)
	for _, g := range []string{"tcx_packets", "tc_packets"} {
		if !waitFor(func() bool { return global(t, l, a.Object, g) >= 4 }) {
			t.Errorf("%s = %d, want >= 4", g, global(t, l, a.Object, g))
		}
	}
}

// TestSkLookup attaches an sk_lookup program to a network namespace of its
// own, and checks that UDP socket lookups run it.
func TestSkLookup(t *testing.T) {
	inNewNetns(t)
	a := artifact(t, "net")
	opt := testOptions(t)
	opt.Programs = []string{"count_lookups"}
	l := load(t, a, opt)
	ns, _ := os.Readlink("/proc/thread-self/ns/net")
	checkAttached(t, l, map[string]string{"count_lookups": "sk_lookup netns " + ns})
	sendUDP(t, 2)
	if !waitFor(func() bool { return global(t, l, a.Object, "lookups") >= 2 }) {
		t.Errorf("lookups = %d, want >= 2", global(t, l, a.Object, "lookups"))
	}
}

// TestSocketFilter checks that a socket filter is loaded and pinned, but
// not attached, with a note.
func TestSocketFilter(t *testing.T) {
	requireRoot(t)
	opt := testOptions(t)
	opt.Programs = []string{"socket_all"}
	l := load(t, artifact(t, "net"), opt)
	p := l.Program("socket_all")
	if p.Attached || !strings.Contains(p.Note, "socket filters are attached by the application") {
		t.Errorf("socket filter: attached %v, note %q", p.Attached, p.Note)
	}
	if _, err := os.Stat(p.Pinned); err != nil {
		t.Error(err)
	}
}

// TestCgroupSkb attaches a cgroup_skb/egress program to a cgroup of its own
// and counts the packets a process in it sends.
func TestCgroupSkb(t *testing.T) {
	requireRoot(t)
	root, err := cgroupPath("")
	if err != nil {
		skipHook(t, "%v", err)
	}
	cg := filepath.Join(root, "bpfarm-"+uniqueName(t))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		waitFor(func() bool { return os.Remove(cg) == nil || errors.Is(os.Remove(cg), os.ErrNotExist) })
	})
	a := artifact(t, "net")
	opt := testOptions(t)
	opt.Programs = []string{"cgroup_egress"}
	opt.Attach.CgroupPath = cg
	l := load(t, a, opt)
	checkAttached(t, l, map[string]string{"cgroup_egress": "cgroup_skb/egress " + cg})

	// A shell that moves itself into the cgroup, then sends a datagram.
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && echo bpfarm > /dev/udp/127.0.0.1/9`, cg)
	if out, err := exec.Command("/bin/bash", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if !waitFor(func() bool { return global(t, l, a.Object, "cgroup_packets") >= 1 }) {
		t.Errorf("cgroup_packets = 0")
	}
}

// TestRawTracepoint counts this process's system calls with a raw
// tracepoint.
func TestRawTracepoint(t *testing.T) {
	requireRoot(t)
	a := artifact(t, "tracing")
	opt := testOptions(t)
	opt.Programs = []string{"raw_sys_enter"}
	opt.Set = map[string]string{"targ_tgid": strconv.Itoa(os.Getpid())}
	l := load(t, a, opt)
	checkAttached(t, l, map[string]string{"raw_sys_enter": "raw_tracepoint sys_enter"})
	openFiles(t, 5)
	if got := global(t, l, a.Object, "raw_hits"); got < 5 {
		t.Errorf("raw_hits = %d, want >= 5", got)
	}
}

// TestPerfEvent attaches a perf_event program to a cpu-clock event on
// every CPU and waits for samples.
func TestPerfEvent(t *testing.T) {
	requireRoot(t)
	a := artifact(t, "tracing")
	opt := testOptions(t)
	opt.Programs = []string{"perf_sample"}
	opt.Attach.PerfFreq = 1000
	l := load(t, a, opt)
	cpus, err := onlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	checkAttached(t, l, map[string]string{"perf_sample": fmt.Sprintf("perf_event cpu-clock 1000 Hz on %d CPUs", len(cpus))})
	p := l.Program("perf_sample")
	if len(p.Links) != len(cpus) || filepath.Base(p.Links[0].Pinned) != fmt.Sprintf("perf_sample@cpu%d", cpus[0]) {
		t.Errorf("links = %+v, want one per CPU %v", p.Links, cpus)
	}
	ok := waitFor(func() bool {
		// Keep a CPU busy for a while.
		for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
		}
		return global(t, l, a.Object, "samples") > 0
	})
	if !ok {
		t.Error("no perf_event samples")
	}
}

// TestIter pins a task iterator's link and reads it like cat would.
func TestIter(t *testing.T) {
	requireRoot(t)
	opt := testOptions(t)
	opt.Programs = []string{"iter_tasks"}
	l := load(t, artifact(t, "tracing"), opt)
	checkAttached(t, l, map[string]string{"iter_tasks": "iter task"})
	out, err := os.ReadFile(l.Program("iter_tasks").Links[0].Pinned)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\n%d ", os.Getpid()); !strings.Contains("\n"+string(out), want) {
		t.Errorf("iterator output does not list this process (%d):\n%.500s", os.Getpid(), out)
	}
}

// TestUprobe attaches uprobe-readline to /bin/bash:readline and counts an
// interactive bash's reads.
func TestUprobe(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		skipHook(t, "no /bin/bash: %v", err)
	}
	a := artifact(t, "uprobe-readline")
	l := load(t, a, testOptions(t))
	checkAttached(t, l, map[string]string{
		"readline_entry":  "uprobe /bin/bash:readline",
		"readline_return": "uretprobe /bin/bash:readline",
	})
	before := global(t, l, a.Object, "calls")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", "--norc", "--noprofile", "-i")
	cmd.Stdin = strings.NewReader("echo bpfarm-readline\nexit\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if after := global(t, l, a.Object, "calls"); after < before+2 {
		t.Errorf("calls %d -> %d, want at least 2 more", before, after)
	}

	// With a PID filter, other processes' reads are not counted.
	opt := testOptions(t)
	opt.Attach.UprobePID = os.Getpid()
	l = load(t, artifact(t, "uprobe-readline"), opt)
	if p := l.Program("readline_entry"); p.AttachPoint != fmt.Sprintf("uprobe /bin/bash:readline (pid %d)", os.Getpid()) {
		t.Errorf("attach point %q", p.AttachPoint)
	}
}

// TestKprobe attaches each kprobe flavour. This kernel may have no
// kprobes: then the test checks the error and skips.
func TestKprobe(t *testing.T) {
	requireRoot(t)
	f := probeFeatures()
	for _, c := range []struct{ prog, hook string }{
		{"kprobe_openat2", "kprobe/do_sys_openat2"},
		{"kretprobe_openat2", "kretprobe/do_sys_openat2"},
		{"ksyscall_openat", "ksyscall/openat"},
		{"kprobe_multi_openat", "kprobe.multi/do_sys_openat*"},
	} {
		t.Run(c.prog, func(t *testing.T) {
			a := artifact(t, "kprobe")
			opt := testOptions(t)
			opt.Programs = []string{c.prog}
			l, err := tryLoad(t, a, opt)
			if err != nil {
				var pe *ProgramError
				if !errors.As(err, &pe) || pe.Op != "attach" || pe.Program != c.prog {
					t.Fatalf("Load: %v", err)
				}
				if !strings.Contains(err.Error(), "attach "+c.hook+" (program "+c.prog+"): ") {
					t.Errorf("error does not name the hook %s: %v", c.hook, err)
				}
				if !f.Kprobes && c.hook != "kprobe.multi/do_sys_openat*" &&
					!strings.Contains(err.Error(), "this kernel has no kprobe support (CONFIG_KPROBES=n)") {
					t.Errorf("error does not say kprobes are missing: %v", err)
				}
				skipHook(t, "%v", err)
			}
			openFiles(t, 3)
			if got := global(t, l, a.Object, "hits"); got < 3 {
				t.Errorf("hits = %d, want >= 3", got)
			}
		})
	}
}

// TestTrampolines loads fentry, fexit, fmod_ret and lsm programs. This
// sandbox refuses BPF trampolines: then the test checks the error and
// skips.
func TestTrampolines(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct{ prog, hook string }{
		{"fentry_unlinkat", "fentry/do_unlinkat"},
		{"fexit_unlinkat", "fexit/do_unlinkat"},
		{"fmod_ret_test", "fmod_ret/bpf_modify_return_test"},
		{"lsm_file_open", "lsm/file_open"},
	} {
		t.Run(c.prog, func(t *testing.T) {
			a := artifact(t, "trampoline")
			opt := testOptions(t)
			opt.Programs = []string{c.prog}
			l, err := tryLoad(t, a, opt)
			if err != nil {
				var pe *ProgramError
				if !errors.As(err, &pe) || pe.Program != c.prog {
					t.Fatalf("Load: %v", err)
				}
				if !strings.Contains(err.Error(), c.hook+" (program "+c.prog+"): ") {
					t.Errorf("error does not name the hook %s: %v", c.hook, err)
				}
				if errors.Is(err, unix.EPERM) && !strings.Contains(err.Error(), "refused a BPF trampoline") &&
					!strings.Contains(err.Error(), "BPF LSM is not active") {
					t.Errorf("EPERM not explained: %v", err)
				}
				skipHook(t, "%v", err)
			}
			checkAttached(t, l, nil)
			if c.prog == "fentry_unlinkat" || c.prog == "fexit_unlinkat" {
				p := filepath.Join(t.TempDir(), "f")
				os.WriteFile(p, nil, 0o644)
				os.Remove(p)
				if got := global(t, l, a.Object, "hits"); got < 1 {
					t.Errorf("hits = %d", got)
				}
			}
		})
	}
}
