//go:build linux

package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// execEvent mirrors struct event in examples/execsnoop/execsnoop.h.
type execEvent struct {
	Pid      int32
	Ppid     int32
	UID      uint32
	Comm     [16]byte
	Filename [128]byte
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// execEvents opens the set's events ring buffer from its pin.
func execEvents(t *testing.T, l *Loaded) *ringbuf.Reader {
	t.Helper()
	rd, err := ringbuf.NewReader(pinnedMap(t, l, "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// nextExec reads exec events until one of pid, failing t if the ring
// buffer stays empty for long; it returns the events before it too.
func nextExec(t *testing.T, rd *ringbuf.Reader, pid int) (execEvent, []execEvent) {
	t.Helper()
	var before []execEvent
	rd.SetDeadline(time.Now().Add(10 * time.Second))
	for {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("no exec event of pid %d: %v", pid, err)
		}
		var ev execEvent
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
			t.Fatalf("decode %d-byte event: %v", len(rec.RawSample), err)
		}
		if int(ev.Pid) == pid {
			return ev, before
		}
		before = append(before, ev)
	}
}

// runTrue runs /bin/true, as uid when not zero, and returns its pid.
func runTrue(t *testing.T, uid uint32) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// schedStats mirrors struct sched_stats in examples/schedcount/schedcount.h.
type schedStats struct {
	SwitchedIn uint64
	Preempted  uint64
}

// checkSchedcount checks that a loaded schedcount (targ_tgid = this
// process) counts this process's openat calls and this thread's switches.
// It returns how much openat_count grew for 10 opens.
func checkSchedcount(t *testing.T, l *Loaded) uint64 {
	t.Helper()
	const opens = 10
	before := counter(t, l, "openat_count")
	openFiles(t, opens)
	after := counter(t, l, "openat_count")
	t.Logf("openat_count: %d -> %d", before, after)
	if after < before+opens {
		t.Errorf("openat_count went from %d to %d, want at least %d more", before, after, opens)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(syscall.Gettid())
	for range 3 {
		time.Sleep(time.Millisecond)
	}
	var st schedStats
	if err := pinnedMap(t, l, "switches").Lookup(tid, &st); err != nil {
		t.Fatalf("no sched_switch count for this thread (%d): %v", tid, err)
	}
	if st.SwitchedIn == 0 {
		t.Errorf("switched_in = 0 for thread %d", tid)
	}
	return after - before
}

// checkAttached checks that every program of l is attached at the
// expected point.
func checkAttached(t *testing.T, l *Loaded, points map[string]string) {
	t.Helper()
	var names []string
	for _, p := range l.Programs {
		names = append(names, p.Name)
		if !p.Attached || p.LinkID == 0 || p.ID == 0 {
			t.Errorf("program %s: attached %v, link %d, id %d", p.Name, p.Attached, p.LinkID, p.ID)
		}
		if want, ok := points[p.Name]; ok && p.AttachPoint != want {
			t.Errorf("program %s: attach point %q, want %q", p.Name, p.AttachPoint, want)
		}
		for _, ls := range p.Links {
			if _, err := os.Stat(ls.Pinned); err != nil {
				t.Errorf("program %s: link pin: %v", p.Name, err)
			}
		}
	}
	for name := range points {
		if !slices.Contains(names, name) {
			t.Errorf("program %s not loaded (have %v)", name, names)
		}
	}
}

// TestLoadModes loads execsnoop and schedcount with CO-RE resolved each
// way, and checks that they record and count the same.
func TestLoadModes(t *testing.T) {
	requireRoot(t)
	execsnoop := artifact(t, "execsnoop")
	schedcount := artifact(t, "schedcount")
	pid := strconv.Itoa(os.Getpid())

	// What each mode saw: the exec event and the openat count's growth.
	type pattern struct {
		ppid           int32
		comm, filename string
		opens          uint64
	}
	seen := map[Mode]pattern{}
	defer func() {
		if len(seen) != 3 {
			return
		}
		if seen[ModeMinBTF] != seen[ModeHostBTF] || seen[ModeRelocated] != seen[ModeHostBTF] {
			t.Errorf("the modes saw different things: %+v", seen)
		}
	}()

	for _, mode := range []Mode{ModeHostBTF, ModeMinBTF, ModeRelocated} {
		t.Run(string(mode), func(t *testing.T) {
			opt := testOptions(t)
			opt.Mode = mode
			opt.Set = map[string]string{"targ_ppid": pid}
			le := load(t, execsnoop, opt)
			if le.Mode != string(mode) {
				t.Errorf("mode = %s, want %s", le.Mode, mode)
			}
			checkAttached(t, le, map[string]string{"handle_exec": "tracepoint sched/sched_process_exec"})

			rd := execEvents(t, le)
			child := runTrue(t, 0)
			ev, _ := nextExec(t, rd, child)
			if int(ev.Ppid) != os.Getpid() || cString(ev.Filename[:]) != "/bin/true" || cString(ev.Comm[:]) != "true" {
				t.Errorf("event: ppid %d comm %q filename %q", ev.Ppid, cString(ev.Comm[:]), cString(ev.Filename[:]))
			}

			opt.Set = map[string]string{"targ_tgid": pid}
			ls := load(t, schedcount, opt)
			checkAttached(t, ls, map[string]string{
				"handle_switch": "tp_btf sched_switch",
				"count_openat":  "tracepoint syscalls/sys_enter_openat",
			})
			opens := checkSchedcount(t, ls)
			if !t.Failed() {
				seen[mode] = pattern{ev.Ppid, cString(ev.Comm[:]), cString(ev.Filename[:]), opens}
			}
		})
	}
}

// TestRelocatedNoKernelBTF checks that ModeRelocated consults no kernel
// BTF for CO-RE: the CO-RE object, given as if it were pre-relocated,
// fails to load, while the pre-relocated one loads.
func TestRelocatedNoKernelBTF(t *testing.T) {
	requireRoot(t)
	a := artifact(t, "execsnoop")
	opt := testOptions(t)
	opt.Mode = ModeRelocated

	fake := &Artifact{Revision: "core-as-relocated", Relocated: a.Object}
	if l, err := tryLoad(t, fake, opt); err == nil {
		t.Fatalf("the CO-RE object loaded as relocated, with programs %v: kernel BTF was used", l.Programs)
	} else {
		t.Logf("CO-RE object without kernel BTF: %v", err)
		if _, serr := os.Stat(setDir(opt.PinDir, fake.Name)); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("failed load left %s behind", setDir(opt.PinDir, fake.Name))
		}
	}

	real := &Artifact{Revision: "relocated", Relocated: a.Relocated}
	l := load(t, real, opt)
	checkAttached(t, l, map[string]string{"handle_exec": "tracepoint sched/sched_process_exec"})
}

// TestAutoMode checks ModeAuto's choice: host BTF, else MinBTF, else the
// relocated object.
func TestAutoMode(t *testing.T) {
	requireTools(t)
	a := &Artifact{Object: []byte{1}, MinBTF: []byte{1}, Relocated: []byte{1}}
	check := func(a *Artifact, opt Options, want Mode) {
		t.Helper()
		got, err := resolveMode(a, opt)
		if err != nil || got != want {
			t.Errorf("resolveMode = %s, %v; want %s", got, err, want)
		}
	}
	saved := hostBTFPath
	t.Cleanup(func() { hostBTFPath = saved })

	hostBTFPath = filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(hostBTFPath, nil, 0o644)
	check(a, Options{}, ModeHostBTF)
	check(a, Options{Mode: ModeRelocated}, ModeRelocated)

	hostBTFPath = filepath.Join(t.TempDir(), "missing")
	check(a, Options{}, ModeMinBTF)
	check(&Artifact{Object: []byte{1}, Relocated: []byte{1}}, Options{}, ModeRelocated)
	check(&Artifact{Object: []byte{1}}, Options{}, ModeHostBTF)
	kbtf := filepath.Join(t.TempDir(), "kbtf")
	os.WriteFile(kbtf, nil, 0o644)
	check(a, Options{KernelBTF: kbtf}, ModeHostBTF)
	if _, err := resolveMode(a, Options{Mode: "bogus"}); err == nil {
		t.Error("mode bogus accepted")
	}

	// Live: without host BTF, auto loads with the minimized BTF.
	requireRoot(t)
	exe := artifact(t, "execsnoop")
	l := load(t, exe, testOptions(t))
	if l.Mode != string(ModeMinBTF) {
		t.Errorf("auto without host BTF: mode %s, want %s", l.Mode, ModeMinBTF)
	}
	exe = artifact(t, "execsnoop")
	exe.MinBTF = nil
	l = load(t, exe, testOptions(t))
	if l.Mode != string(ModeRelocated) {
		t.Errorf("auto without host BTF or MinBTF: mode %s, want %s", l.Mode, ModeRelocated)
	}
}

// TestKernelBTFOption loads with Options.KernelBTF naming a BTF file.
func TestKernelBTFOption(t *testing.T) {
	requireRoot(t)
	a := artifact(t, "schedcount")
	opt := testOptions(t)
	opt.Mode = ModeHostBTF
	opt.KernelBTF = filepath.Join(t.TempDir(), "min.btf")
	if err := os.WriteFile(opt.KernelBTF, a.MinBTF, 0o644); err != nil {
		t.Fatal(err)
	}
	opt.Set = map[string]string{"targ_tgid": strconv.Itoa(os.Getpid())}
	l := load(t, a, opt)
	checkSchedcount(t, l)

	opt.KernelBTF = filepath.Join(t.TempDir(), "missing.btf")
	if _, err := tryLoad(t, artifact(t, "schedcount"), opt); err == nil || !strings.Contains(err.Error(), "missing.btf") {
		t.Errorf("missing KernelBTF: %v", err)
	}
}

// TestSet checks that const volatile filters change what execsnoop
// records, and that bad names and values are refused.
func TestSet(t *testing.T) {
	requireRoot(t)
	a := artifact(t, "execsnoop")
	opt := testOptions(t)
	opt.Set = map[string]string{"targ_ppid": strconv.Itoa(os.Getpid()), "min_uid": "1"}
	l := load(t, a, opt)
	rd := execEvents(t, l)

	rootChild := runTrue(t, 0)
	nobodyChild := runTrue(t, 65534)
	ev, before := nextExec(t, rd, nobodyChild)
	if ev.UID != 65534 {
		t.Errorf("uid = %d, want 65534", ev.UID)
	}
	for _, b := range before {
		if int(b.Pid) == rootChild {
			t.Errorf("min_uid=1 recorded root's exec of pid %d", rootChild)
		}
	}

	bad := []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"nope": "1"}, "unknown variable: the object's const volatile variables are min_uid, targ_ppid"},
		{map[string]string{"min_uid": "-1"}, "out of range for an unsigned 32-bit integer"},
		{map[string]string{"min_uid": "0x100000000"}, "out of range"},
		{map[string]string{"targ_ppid": "abc"}, `"abc" is not an integer`},
	}
	for _, b := range bad {
		opt := testOptions(t)
		opt.Set = b.set
		_, err := tryLoad(t, artifact(t, "execsnoop"), opt)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Set %v: error %v, want %q", b.set, err, b.want)
		}
		if entries, _ := os.ReadDir(opt.StateDir); len(entries) != 0 {
			t.Errorf("Set %v: a failed load left state %v", b.set, entries)
		}
	}

	// A global the program writes is not a const volatile.
	opt = testOptions(t)
	opt.Set = map[string]string{"calls": "1"}
	if _, err := tryLoad(t, artifact(t, "uprobe-readline"), opt); err == nil || !strings.Contains(err.Error(), "not a const volatile variable") {
		t.Errorf("Set calls: %v", err)
	}
}

// TestMaxEntries checks that MaxEntries resizes maps.
func TestMaxEntries(t *testing.T) {
	requireRoot(t)
	opt := testOptions(t)
	opt.MaxEntries = map[string]uint32{"switches": 4096}
	l := load(t, artifact(t, "schedcount"), opt)
	if got := l.Map("switches").MaxEntries; got != 4096 {
		t.Errorf("state: switches max_entries = %d, want 4096", got)
	}
	m := pinnedMap(t, l, "switches")
	if m.MaxEntries() != 4096 {
		t.Errorf("kernel: switches max_entries = %d, want 4096", m.MaxEntries())
	}
	out, err := exec.Command(tools.bpftool, "map", "show", "id", strconv.Itoa(int(l.Map("switches").ID))).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "max_entries 4096") {
		t.Errorf("bpftool map show: %v\n%s", err, out)
	}

	opt = testOptions(t)
	opt.MaxEntries = map[string]uint32{"nope": 1}
	if _, err := tryLoad(t, artifact(t, "schedcount"), opt); err == nil || !strings.Contains(err.Error(), "unknown map nope: the object has openat_count, switches") {
		t.Errorf("unknown map: %v", err)
	}
}

// TestProgramsSubset loads one program of schedcount: the other is not in
// the kernel, the pins or the state.
func TestProgramsSubset(t *testing.T) {
	requireRoot(t)
	opt := testOptions(t)
	opt.Programs = []string{"count_openat"}
	opt.Set = map[string]string{"targ_tgid": strconv.Itoa(os.Getpid())}
	l := load(t, artifact(t, "schedcount"), opt)
	if len(l.Programs) != 1 || l.Programs[0].Name != "count_openat" {
		t.Fatalf("programs = %v", l.Programs)
	}
	entries, err := os.ReadDir(filepath.Join(l.PinDir, progsDir))
	if err != nil || len(entries) != 1 || entries[0].Name() != "count_openat" {
		t.Errorf("pinned programs: %v %v", entries, err)
	}
	using := progsUsing(t, l)
	if len(using) != 1 || using[l.Programs[0].ID] != "count_openat" {
		t.Errorf("bpftool: programs using the set's maps = %v, want only count_openat (%d)", using, l.Programs[0].ID)
	}
	before := counter(t, l, "openat_count")
	openFiles(t, 3)
	if after := counter(t, l, "openat_count"); after < before+3 {
		t.Errorf("openat_count %d -> %d", before, after)
	}

	opt = testOptions(t)
	opt.Programs = []string{"count_openat", "nope"}
	if _, err := tryLoad(t, artifact(t, "schedcount"), opt); err == nil || !strings.Contains(err.Error(), "unknown program nope: the object has count_openat, handle_switch") {
		t.Errorf("unknown program: %v", err)
	}
}

// TestNoAttach checks that NoAttach loads and pins the programs bpftool
// prog loadall loads, and attaches none.
func TestNoAttach(t *testing.T) {
	requireRoot(t)
	for _, name := range []string{"schedcount", "execsnoop", "xdpcount"} {
		t.Run(name, func(t *testing.T) {
			a := artifact(t, name)
			opt := testOptions(t)
			opt.NoAttach = true
			l := load(t, a, opt)

			obj := filepath.Join(t.TempDir(), name+".o")
			if err := os.WriteFile(obj, a.Object, 0o644); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(pinRoot, "bpftool-"+uniqueName(t))
			t.Cleanup(func() { os.RemoveAll(dir) })
			if out, err := exec.Command(tools.bpftool, "prog", "loadall", obj, dir).CombinedOutput(); err != nil {
				t.Fatalf("bpftool prog loadall: %v\n%s", err, out)
			}
			want := dirNames(t, dir)
			got := dirNames(t, filepath.Join(l.PinDir, progsDir))
			if !slices.Equal(got, want) {
				t.Errorf("pinned programs %v, bpftool prog loadall pins %v", got, want)
			}
			if links := dirNames(t, filepath.Join(l.PinDir, linksDir)); len(links) != 0 {
				t.Errorf("links pinned: %v", links)
			}
			for _, p := range l.Programs {
				if p.Attached || p.LinkID != 0 || p.ID == 0 {
					t.Errorf("program %s: attached %v link %d id %d", p.Name, p.Attached, p.LinkID, p.ID)
				}
				prog, err := ebpf.LoadPinnedProgram(p.Pinned, nil)
				if err != nil {
					t.Errorf("program %s pin: %v", p.Name, err)
					continue
				}
				prog.Close()
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}
