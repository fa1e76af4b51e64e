package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
)

// The tests compile every example with the real clang, the way the farm
// does, against a vmlinux.h generated once per run from the running
// kernel's BTF; then inspect the objects and, where the kernel allows, load
// and attach them and check that they count.

var (
	clangPath  string
	vmlinuxDir string
	toolErr    error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "examples-vmlinux-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	toolErr = setupTools(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// setupTools finds clang and writes vmlinux.h into dir.
func setupTools(dir string) error {
	var err error
	if clangPath, err = exec.LookPath("clang-19"); err != nil {
		return fmt.Errorf("clang-19 not found: %w", err)
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		return fmt.Errorf("libbpf headers (libbpf-dev) not installed: %w", err)
	}
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/bpftool"); serr != nil {
			return fmt.Errorf("bpftool not found: %w", err)
		}
		bpftool = "/usr/sbin/bpftool"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("kernel has no BTF: %w", err)
	}

	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("generate vmlinux.h: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinux.h"), stdout.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write vmlinux.h: %w", err)
	}
	vmlinuxDir = dir
	return nil
}

// skip skips t, or fails it if BPFARM_TEST_STRICT=1.
func skip(t *testing.T, args ...any) {
	t.Helper()
	if os.Getenv("BPFARM_TEST_STRICT") == "1" {
		t.Fatal(args...)
	}
	t.Skip(args...)
}

func requireTools(t *testing.T) {
	t.Helper()
	if toolErr != nil {
		skip(t, toolErr)
	}
}

// farmHeaders holds the farm's own <bpfarm.h>.
var farmHeaders, _ = filepath.Abs("../bpfsrc/compile/farm")

// clang compiles example name (name/name.bpf.c) and returns the object, or
// clang's stderr and an error.
func clang(t *testing.T, name string) ([]byte, string, error) {
	t.Helper()
	requireTools(t)

	out := filepath.Join(t.TempDir(), name+".o")
	var stderr bytes.Buffer
	cmd := exec.Command(clangPath, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
		"-I"+vmlinuxDir, "-I"+farmHeaders, "-c", name+".bpf.c", "-o", out)
	cmd.Dir = name
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, stderr.String(), err
	}
	obj, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return obj, stderr.String(), nil
}

// compile compiles example name, failing t if that fails.
func compile(t *testing.T, name string) []byte {
	t.Helper()
	obj, stderr, err := clang(t, name)
	if err != nil {
		t.Fatalf("compile %s: %v\n%s", name, err, stderr)
	}
	return obj
}

// want is what an example's object must contain.
type want struct {
	programs map[string]string // name -> section
	maps     map[string]string // name -> type
	globals  []string
	core     bool // has CO-RE relocations
}

var examples = map[string]want{
	"execsnoop": {
		programs: map[string]string{"handle_exec": "tp/sched/sched_process_exec"},
		maps:     map[string]string{"events": "RingBuf"},
		globals:  []string{"min_uid", "targ_ppid"},
		core:     true,
	},
	"execsnoop-perf": {
		programs: map[string]string{
			"tracepoint__syscalls__sys_enter_execve": "tp/syscalls/sys_enter_execve",
			"tracepoint__syscalls__sys_exit_execve":  "tp/syscalls/sys_exit_execve",
		},
		maps:    map[string]string{"events": "PerfEventArray", "execs": "Hash"},
		globals: []string{"ignore_failed"},
		core:    true,
	},
	"runqlat": {
		programs: map[string]string{
			"handle_wakeup":     "tp_btf/sched_wakeup",
			"handle_wakeup_new": "tp_btf/sched_wakeup_new",
			"handle_switch":     "tp_btf/sched_switch",
		},
		maps: map[string]string{"start": "Hash", "hist": "Array", "hists": "Hash"},
		core: true,
	},
	"schedcount": {
		programs: map[string]string{
			"handle_switch": "tp_btf/sched_switch",
			"count_openat":  "tp/syscalls/sys_enter_openat",
		},
		maps:    map[string]string{"switches": "Hash", "openat_count": "Array"},
		globals: []string{"targ_tgid"},
		core:    true,
	},
	"writesize": {
		programs: map[string]string{"count_write": "tp/syscalls/sys_enter_write"},
		maps:     map[string]string{"write_sizes": "Array", "writes": "Hash", "big_writes": "RingBuf"},
		globals:  []string{"targ_tgid"},
		core:     true, // vmlinux.h marks trace_event_raw_sys_enter preserve_access_index
	},
	"xdpcount": {
		programs: map[string]string{"xdp_count": "xdp"},
		maps:     map[string]string{"proto_count": "PerCPUArray"},
		core:     true, // vmlinux.h marks xdp_md, ethhdr, iphdr preserve_access_index
	},
	"uprobe-readline": {
		programs: map[string]string{
			"readline_entry":  "uprobe//bin/bash:readline",
			"readline_return": "uretprobe//bin/bash:readline",
		},
		maps:    map[string]string{"lines": "RingBuf"},
		globals: []string{"calls"},
		core:    true, // PT_REGS_PARM1 reads struct pt_regs with CO-RE
	},
}

// TestExamplesLayout checks that every example directory has one NAME.bpf.c
// that includes vmlinux.h first, and an entry in the README.
func TestExamplesLayout(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		dirs = append(dirs, name)
		if _, ok := examples[name]; !ok && name != "broken" {
			t.Errorf("example %s has no expectations in examples_test.go", name)
		}
		if !bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("README.md does not describe %s", name)
		}
		src, err := os.ReadFile(filepath.Join(name, name+".bpf.c"))
		if err != nil {
			t.Error(err)
			continue
		}
		includes := regexp.MustCompile(`(?m)^\s*#\s*include\s*(\S+)`).FindAllSubmatch(src, -1)
		if len(includes) == 0 || string(includes[0][1]) != `"vmlinux.h"` {
			t.Errorf("%s.bpf.c must include \"vmlinux.h\" first", name)
		}
	}
	for name := range examples {
		if !slices.Contains(dirs, name) {
			t.Errorf("example %s is missing", name)
		}
	}
}

func TestExamplesInspect(t *testing.T) {
	for name, w := range examples {
		t.Run(name, func(t *testing.T) {
			o, err := inspect.Inspect(compile(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Check(); err != nil {
				t.Errorf("Check(): %v", err)
			}
			if o.License != "Dual BSD/GPL" {
				t.Errorf("License = %q", o.License)
			}

			progs := map[string]string{}
			for _, p := range o.Programs {
				progs[p.Name] = p.Section
			}
			if fmt.Sprint(progs) != fmt.Sprint(w.programs) {
				t.Errorf("programs = %v, want %v", progs, w.programs)
			}
			maps := map[string]string{}
			for _, m := range o.Maps {
				maps[m.Name] = m.Type
				if m.MaxEntries == 0 && m.Type != "PerfEventArray" { // perf arrays default to the CPU count
					t.Errorf("map %s has no max_entries", m.Name)
				}
			}
			if fmt.Sprint(maps) != fmt.Sprint(w.maps) {
				t.Errorf("maps = %v, want %v", maps, w.maps)
			}
			var globals []string
			for _, g := range o.Globals {
				globals = append(globals, g.Name)
			}
			slices.Sort(globals)
			if !slices.Equal(globals, w.globals) {
				t.Errorf("globals = %v, want %v", globals, w.globals)
			}
			if got := o.CORERelocations > 0; got != w.core {
				t.Errorf("CORERelocations = %d, want CO-RE: %v", o.CORERelocations, w.core)
			}
		})
	}
}

// TestBrokenDiagnostic checks that broken.bpf.c fails with the diagnostic
// its header comment documents.
func TestBrokenDiagnostic(t *testing.T) {
	src, err := os.ReadFile("broken/broken.bpf.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`expected diagnostic: (.*)`).FindSubmatch(src)
	if m == nil {
		t.Fatal("broken.bpf.c does not document its expected diagnostic")
	}
	want := strings.TrimSpace(string(m[1]))

	_, stderr, err := clang(t, "broken")
	if err == nil {
		t.Fatal("broken.bpf.c compiled")
	}
	var errs []string
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		if strings.Contains(sc.Text(), ": error: ") {
			errs = append(errs, sc.Text())
		}
	}
	if len(errs) != 1 || errs[0] != want {
		t.Errorf("errors = %q, want [%q]\nfull output:\n%s", errs, want, stderr)
	}
}

// requireBPF skips t unless this process can load BPF programs and attach
// to tracepoints (mounting tracefs if needed).
func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "loading BPF programs needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		skip(t, "remove memlock rlimit:", err)
	}
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if err := syscall.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
			skip(t, "tracefs is not mounted and mounting it failed:", err)
		}
	}
}

// load compiles and loads example name, after letting edit adjust the spec.
func load(t *testing.T, name string, edit func(*ebpf.CollectionSpec) error) *ebpf.Collection {
	t.Helper()
	obj := compile(t, name)
	requireBPF(t)
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		if err := edit(spec); err != nil {
			t.Fatal(err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load %s: %+v", name, ve)
		}
		t.Fatalf("load %s: %v", name, err)
	}
	t.Cleanup(func() { coll.Close() })
	return coll
}

func attach(t *testing.T, l link.Link, err error) {
	t.Helper()
	if err != nil {
		t.Fatal("attach:", err)
	}
	t.Cleanup(func() { l.Close() })
}

// execEvent mirrors struct event in execsnoop/execsnoop.h.
type execEvent struct {
	Pid      int32
	Ppid     int32
	UID      uint32
	Comm     [16]byte
	Filename [128]byte
	Args     [4][64]byte
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func TestExecsnoopLive(t *testing.T) {
	coll := load(t, "execsnoop", func(spec *ebpf.CollectionSpec) error {
		// Only report children of this test, not the rest of the machine.
		return spec.Variables["targ_ppid"].Set(int32(os.Getpid()))
	})
	l, err := link.Tracepoint("sched", "sched_process_exec", coll.Programs["handle_exec"], nil)
	attach(t, l, err)

	rd, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	cmd := exec.Command("/bin/true", "execsnoop-marker")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}

	rd.SetDeadline(time.Now().Add(10 * time.Second))
	rec, err := rd.Read()
	if err != nil {
		t.Fatalf("no exec event: %v", err)
	}
	var ev execEvent
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
		t.Fatalf("decode %d-byte event: %v", len(rec.RawSample), err)
	}
	t.Logf("event: pid=%d ppid=%d uid=%d comm=%q filename=%q", ev.Pid, ev.Ppid, ev.UID, cString(ev.Comm[:]), cString(ev.Filename[:]))

	if int(ev.Pid) != cmd.Process.Pid {
		t.Errorf("pid = %d, want %d", ev.Pid, cmd.Process.Pid)
	}
	if int(ev.Ppid) != os.Getpid() {
		t.Errorf("ppid = %d, want %d", ev.Ppid, os.Getpid())
	}
	if int(ev.UID) != os.Getuid() {
		t.Errorf("uid = %d, want %d", ev.UID, os.Getuid())
	}
	if got := cString(ev.Comm[:]); got != "true" {
		t.Errorf("comm = %q, want %q", got, "true")
	}
	if got := cString(ev.Filename[:]); got != "/bin/true" {
		t.Errorf("filename = %q, want %q", got, "/bin/true")
	}
	if a0, a1, a2 := cString(ev.Args[0][:]), cString(ev.Args[1][:]), cString(ev.Args[2][:]); a0 != "/bin/true" || a1 != "execsnoop-marker" || a2 != "" {
		t.Errorf("args = %q %q %q, want /bin/true execsnoop-marker", a0, a1, a2)
	}
}

// schedStats mirrors struct sched_stats in schedcount/schedcount.h.
type schedStats struct {
	SwitchedIn uint64
	Preempted  uint64
}

func TestSchedcountLive(t *testing.T) {
	coll := load(t, "schedcount", func(spec *ebpf.CollectionSpec) error {
		return spec.Variables["targ_tgid"].Set(int32(os.Getpid()))
	})
	l, err := link.Tracepoint("syscalls", "sys_enter_openat", coll.Programs["count_openat"], nil)
	attach(t, l, err)
	l, err = link.AttachTracing(link.TracingOptions{Program: coll.Programs["handle_switch"]})
	attach(t, l, err)

	const opens = 10
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range opens {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	var count uint64
	if err := coll.Maps["openat_count"].Lookup(uint32(0), &count); err != nil {
		t.Fatal(err)
	}
	t.Logf("openat_count = %d", count)
	if count < opens {
		t.Errorf("openat_count = %d, want >= %d", count, opens)
	}

	// Sleeping switches this thread out and back in.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(syscall.Gettid())
	for range 3 {
		time.Sleep(time.Millisecond)
	}
	var st schedStats
	if err := coll.Maps["switches"].Lookup(tid, &st); err != nil {
		t.Fatalf("no sched_switch count for this thread (%d): %v", tid, err)
	}
	t.Logf("thread %d: %+v", tid, st)
	if st.SwitchedIn == 0 {
		t.Errorf("switched_in = 0 for thread %d", tid)
	}

	var (
		key     uint32
		entries int
	)
	iter := coll.Maps["switches"].Iterate()
	for iter.Next(&key, &st) {
		entries++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("switches has %d threads", entries)
}

// TestWritesizeLive: writes of 1000 bytes land in log2 slot 9 (512-1023)
// and are counted under this process's tgid.
func TestWritesizeLive(t *testing.T) {
	coll := load(t, "writesize", func(spec *ebpf.CollectionSpec) error {
		return spec.Variables["targ_tgid"].Set(uint32(os.Getpid()))
	})
	l, err := link.Tracepoint("syscalls", "sys_enter_write", coll.Programs["count_write"], nil)
	attach(t, l, err)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const writes = 20
	for range writes {
		if _, err := f.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	var slots [32]uint32
	if err := coll.Maps["write_sizes"].Lookup(uint32(0), &slots); err != nil {
		t.Fatal(err)
	}
	if slots[9] < writes {
		t.Errorf("slot 9 (512-1023) = %d, want >= %d: %v", slots[9], writes, slots)
	}
	var (
		key struct {
			Tgid uint32
			Comm [16]byte
		}
		n, total uint64
	)
	iter := coll.Maps["writes"].Iterate()
	for iter.Next(&key, &n) {
		if key.Tgid == uint32(os.Getpid()) {
			total += n
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if total < writes {
		t.Errorf("writes of this process = %d, want >= %d", total, writes)
	}
}

func TestXdpcountLive(t *testing.T) {
	coll := load(t, "xdpcount", nil)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.AttachXDP(link.XDPOptions{
		Program:   coll.Programs["xdp_count"],
		Interface: lo.Index,
		Flags:     link.XDPGenericMode,
	})
	if err != nil {
		t.Fatalf("attach XDP to lo in generic mode (is another XDP program attached to lo?): %v", err)
	}
	attach(t, l, err)

	// Send to a socket of our own, so that no ICMP "port unreachable"
	// comes back and fails the next write.
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
	const packets = 5
	for range packets {
		if _, err := conn.Write([]byte("bpfarm")); err != nil {
			t.Fatal(err)
		}
	}

	// Loopback delivers in softirq context: wait until the packets have
	// been seen, or give up.
	const ipprotoUDP = 17
	var sum uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var perCPU []uint64
		if err := coll.Maps["proto_count"].Lookup(uint32(ipprotoUDP), &perCPU); err != nil {
			t.Fatal(err)
		}
		sum = 0
		for _, v := range perCPU {
			sum += v
		}
		if sum >= packets {
			break
		}
	}
	t.Logf("UDP packets seen on lo: %d", sum)
	if sum < packets {
		t.Errorf("proto_count[UDP] = %d, want >= %d", sum, packets)
	}
}

func TestUprobeReadlineLive(t *testing.T) {
	coll := load(t, "uprobe-readline", nil)
	ex, err := link.OpenExecutable("/bin/bash")
	if err != nil {
		skip(t, "no /bin/bash:", err)
	}
	l, err := ex.Uprobe("readline", coll.Programs["readline_entry"], nil)
	if err != nil {
		skip(t, "attach uprobe to /bin/bash:readline:", err)
	}
	attach(t, l, err)
	l, err = ex.Uretprobe("readline", coll.Programs["readline_return"], nil)
	attach(t, l, err)

	rd, err := ringbuf.NewReader(coll.Maps["lines"])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	// An interactive bash reads its commands with readline even from a
	// pipe.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", "--norc", "--noprofile", "-i")
	cmd.Stdin = strings.NewReader("echo bpfarm-readline\nexit\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}

	var calls uint64
	if err := coll.Variables["calls"].Get(&calls); err != nil {
		t.Fatal(err)
	}
	t.Logf("readline calls (any bash on the machine): %d", calls)
	if calls < 2 {
		t.Errorf("calls = %d, want >= 2", calls)
	}

	// Other shells on the machine may show up too: keep our bash's lines.
	want := []string{"echo bpfarm-readline", "exit"}
	var got []string
	rd.SetDeadline(time.Now().Add(10 * time.Second))
	for len(got) < len(want) {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("lines read so far %q: %v", got, err)
		}
		var l readlineLine
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &l); err != nil {
			t.Fatalf("decode %d-byte line: %v", len(rec.RawSample), err)
		}
		if int(l.Pid) == cmd.Process.Pid {
			got = append(got, cString(l.Str[:]))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}
}

// readlineLine mirrors struct line in uprobe-readline/uprobe-readline.bpf.c.
type readlineLine struct {
	Pid  int32
	Comm [16]byte
	Str  [80]byte
}
