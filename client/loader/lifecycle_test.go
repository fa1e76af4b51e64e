//go:build linux

package loader

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// schedcountOptions are options that make schedcount count this process's
// openat calls only.
func schedcountOptions(t *testing.T) Options {
	opt := testOptions(t)
	opt.Set = map[string]string{"targ_tgid": strconv.Itoa(os.Getpid())}
	return opt
}

// checkGone checks that nothing of l is left: no program or map with its
// IDs in the kernel, no pins, no state file.
func checkGone(t *testing.T, l *Loaded, opt Options) {
	t.Helper()
	for _, p := range l.Programs {
		for _, bp := range bpftoolProgs(t) {
			if bp.ID == p.ID {
				t.Errorf("bpftool prog show still lists program %s (id %d)", bp.Name, bp.ID)
			}
		}
	}
	// The kernel frees maps after an RCU grace period.
	for _, m := range l.Maps {
		gone := waitFor(func() bool {
			mm, err := ebpf.NewMapFromID(ebpf.MapID(m.ID))
			if err != nil {
				return true
			}
			mm.Close()
			return false
		})
		if !gone {
			t.Errorf("map %s (id %d) is still loaded", m.Name, m.ID)
		}
	}
	if _, err := os.Stat(l.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s: %v", l.PinDir, err)
	}
	if _, err := os.Stat(stateFile(opt.StateDir, l.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file: %v", err)
	}
}

// TestUnload checks that Unload leaves nothing behind.
func TestUnload(t *testing.T) {
	requireRoot(t)
	for _, name := range []string{"schedcount", "tracing"} {
		t.Run(name, func(t *testing.T) {
			opt := schedcountOptions(t)
			if name == "tracing" {
				opt.Programs = []string{"perf_sample", "iter_tasks", "raw_sys_enter"}
			}
			l := load(t, artifact(t, name), opt)
			if err := Unload(l.Name, opt); err != nil {
				t.Fatal(err)
			}
			checkGone(t, l, opt)
			if err := Unload(l.Name, opt); !errors.Is(err, ErrNotLoaded) || !errors.Is(err, os.ErrNotExist) {
				t.Errorf("second Unload: %v, want ErrNotLoaded", err)
			}
		})
	}
}

// TestStatus checks Status's view of a loaded set: state, live IDs and,
// with BPF statistics enabled, run counts.
func TestStatus(t *testing.T) {
	requireRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF stats: %v", err)
	}
	defer stats.Close()

	opt := schedcountOptions(t)
	opt.Revision = "rev-status"
	l := load(t, artifact(t, "schedcount"), opt)
	openFiles(t, 5)

	all, err := Status(opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Name != l.Name {
		t.Fatalf("Status = %+v", all)
	}
	s := all[0]
	if s.Revision != "rev-status" || s.Mode != l.Mode || !s.Since.Equal(l.Since) || s.PinDir != l.PinDir {
		t.Errorf("status %+v, loaded %+v", s, l)
	}
	sysctl, _ := StatsEnabled()
	if s.StatsEnabled != sysctl {
		t.Errorf("StatsEnabled = %v, sysctl says %v", s.StatsEnabled, sysctl)
	}
	for i, p := range s.Programs {
		want := l.Programs[i]
		if p.ID != want.ID || p.LinkID != want.LinkID || !p.Attached || p.AttachPoint != want.AttachPoint || p.Error != "" {
			t.Errorf("program %+v, loaded %+v", p, want)
		}
		if p.Name == "count_openat" && (p.RunCount < 5 || p.RunTimeNS == 0) {
			t.Errorf("count_openat: run count %d, run time %d ns, want >= 5 runs", p.RunCount, p.RunTimeNS)
		}
	}

	// The state file is the same JSON.
	raw, err := os.ReadFile(stateFile(opt.StateDir, l.Name))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "revision", "mode", "since", "pin_dir", "programs", "maps"} {
		if _, ok := st[k]; !ok {
			t.Errorf("state file has no %q: %s", k, raw)
		}
	}

	// A link that vanished is reported.
	p := l.Program("count_openat")
	if err := os.Remove(p.Links[0].Pinned); err != nil {
		t.Fatal(err)
	}
	all, err = Status(opt)
	if err != nil {
		t.Fatal(err)
	}
	if q := all[0].Programs[0]; q.Name != "count_openat" || q.Attached || !strings.Contains(q.Error, "link pin") {
		t.Errorf("after removing the link pin: %+v", q)
	}
	if _, err := Adopt(l.Name, opt); err == nil || !strings.Contains(err.Error(), "count_openat") {
		t.Errorf("Adopt of a broken set: %v", err)
	}
}

// TestAdopt simulates a daemon restart: all Go handles are dropped, and
// Adopt finds the same programs still attached and counting.
func TestAdopt(t *testing.T) {
	requireRoot(t)
	opt := schedcountOptions(t)
	l := load(t, artifact(t, "schedcount"), opt)
	name := l.Name
	before := counter(t, l, "openat_count")
	l = nil // the restart: nothing survives but pins and state

	a, err := Adopt(name, opt)
	if err != nil {
		t.Fatal(err)
	}
	st, err := readState(opt.StateDir, name)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range a.Programs {
		if p.ID != st.Programs[i].ID || p.LinkID != st.Programs[i].LinkID || !p.Attached {
			t.Errorf("adopted %+v, state %+v", p, st.Programs[i])
		}
	}
	openFiles(t, 4)
	if after := counter(t, a, "openat_count"); after < before+4 {
		t.Errorf("openat_count %d -> %d after adopting", before, after)
	}
	if _, err := Adopt("nope-"+name, opt); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Adopt of an unknown set: %v", err)
	}
}

// TestSwap swaps schedcount's openat counter for a new revision, which
// keeps counting in the same map, then tries a revision the verifier
// rejects, which leaves the running one untouched.
func TestSwap(t *testing.T) {
	requireRoot(t)
	opt := schedcountOptions(t)
	opt.Programs = []string{"count_openat"}
	l := load(t, artifact(t, "schedcount"), opt)
	openFiles(t, 3)
	c1 := counter(t, l, "openat_count")
	old := *l.Program("count_openat")

	v2 := artifact(t, "openat_v2")
	v2.Revision = "v2"
	opt2 := schedcountOptions(t)
	opt2.StateDir = opt.StateDir
	l2, err := Swap(t.Context(), l, v2, opt2)
	if err != nil {
		t.Fatalf("Swap: %v", err)
	}
	p := l2.Program("count_openat")
	if p == nil || p.ID == old.ID || p.LinkID == old.LinkID || !p.Attached || l2.Revision != "v2" {
		t.Fatalf("after swap: %+v (old %+v), revision %s", p, old, l2.Revision)
	}
	if l2.Map("openat_count").ID != l.Map("openat_count").ID {
		t.Errorf("openat_count was not carried over: id %d, was %d", l2.Map("openat_count").ID, l.Map("openat_count").ID)
	}
	openFiles(t, 3)
	c2 := counter(t, l2, "openat_count")
	if c2 < c1+3 {
		t.Errorf("openat_count %d -> %d across the swap, want at least 3 more", c1, c2)
	}
	if hits := global(t, l2, v2.Object, "v2_hits"); hits < 3 {
		t.Errorf("the new revision did not run: v2_hits = %d", hits)
	}
	if !waitFor(func() bool {
		return !slices.ContainsFunc(bpftoolProgs(t), func(bp bpftoolProg) bool { return bp.ID == old.ID })
	}) {
		t.Errorf("old program %d still loaded", old.ID)
	}
	if entries := dirNames(t, pinRoot); len(entries) > 0 {
		for _, e := range entries {
			if strings.HasPrefix(e, l.Name+"@") {
				t.Errorf("swap left %s", e)
			}
		}
	}
	st, err := readState(opt.StateDir, l.Name)
	if err != nil || st.Revision != "v2" || st.Programs[0].ID != p.ID {
		t.Errorf("state after swap: %+v, %v", st, err)
	}

	// A revision the verifier rejects.
	bad := artifact(t, "bad")
	bad.Revision = "bad"
	optBad := testOptions(t)
	optBad.StateDir = opt.StateDir
	_, err = Swap(t.Context(), l2, bad, optBad)
	var ve *ebpf.VerifierError
	if err == nil || !errors.As(err, &ve) || !strings.Contains(err.Error(), "count_openat") {
		t.Fatalf("Swap to a rejected revision: %v", err)
	}
	t.Logf("rejected swap: %v", err)
	after, err := Adopt(l.Name, opt)
	if err != nil {
		t.Fatalf("Adopt after the rejected swap: %v", err)
	}
	if q := after.Program("count_openat"); q.ID != p.ID || q.LinkID != p.LinkID || after.Revision != "v2" {
		t.Errorf("after the rejected swap: %+v revision %s, want %+v revision v2", q, after.Revision, p)
	}
	c3 := counter(t, after, "openat_count")
	openFiles(t, 3)
	if c4 := counter(t, after, "openat_count"); c4 < c3+3 {
		t.Errorf("after the rejected swap: openat_count %d -> %d", c3, c4)
	}
	if entries, _ := os.ReadDir(pinRoot); len(entries) > 0 {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), l.Name+"@") {
				t.Errorf("the rejected swap left %s", e.Name())
			}
		}
	}
	if _, err := Swap(t.Context(), &Loaded{Name: "nope-" + l.Name}, v2, opt); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Swap of an unknown set: %v", err)
	}
}

// TestVerifierErrors loads an object with two programs the verifier
// rejects and one it accepts: both failures are reported, each with the
// tail of its verifier log, and nothing is left loaded.
func TestVerifierErrors(t *testing.T) {
	requireRoot(t)
	opt := testOptions(t)
	a := artifact(t, "bad")
	_, err := tryLoad(t, a, opt)
	if err == nil {
		t.Fatal("bad loaded")
	}
	t.Logf("%v", err)
	msg := err.Error()
	for _, want := range []string{
		"load program count_openat (tp/syscalls/sys_enter_openat): ",
		"load program bad_ctx (tp/syscalls/sys_enter_close): ",
		"verifier log (last ",
		"invalid access to map value",     // count_openat's failing instruction
		"dereference of modified ctx ptr", // bad_ctx's
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q", want)
		}
	}
	if strings.Contains(msg, "good_getpid") {
		t.Error("the good program is reported as failing")
	}
	var pe *ProgramError
	var ve *ebpf.VerifierError
	if !errors.As(err, &pe) || !errors.As(err, &ve) || len(ve.Log) == 0 {
		t.Errorf("error is not a ProgramError with a VerifierError: %T", err)
	}
	for _, section := range strings.Split(msg, "\nload program ")[1:] {
		lines := strings.Count(section, "\n    ")
		if lines == 0 || lines > verifierTailLines {
			t.Errorf("%d log lines in %q", lines, section)
		}
	}
	if _, err := os.Stat(setDir(opt.PinDir, a.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pins left: %v", err)
	}
	if entries, _ := os.ReadDir(opt.StateDir); len(entries) != 0 {
		t.Errorf("state left: %v", entries)
	}
}

// TestLoadTwice checks that a loaded set can't be loaded again.
func TestLoadTwice(t *testing.T) {
	requireRoot(t)
	opt := testOptions(t)
	l := load(t, artifact(t, "execsnoop"), opt)
	a := artifact(t, "execsnoop")
	a.Name = l.Name
	if _, err := Load(t.Context(), a, opt); err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("second Load: %v", err)
	}
	if _, err := Load(t.Context(), &Artifact{Name: "a/b", Object: a.Object}, opt); err == nil {
		t.Error("name with a slash accepted")
	}

	// Names may have dots, which bpffs refuses: the pin directory has '~'.
	d := artifact(t, "execsnoop")
	d.Name = "dotted.name-" + uniqueName(t)
	ld := load(t, d, opt)
	if ld.PinDir != filepath.Join(opt.PinDir, strings.ReplaceAll(d.Name, ".", "~")) {
		t.Errorf("pin directory %s", ld.PinDir)
	}
	if got, err := Adopt(d.Name, opt); err != nil || got.Name != d.Name {
		t.Errorf("Adopt: %v", err)
	}
	if err := Unload(d.Name, opt); err != nil {
		t.Error(err)
	}
	checkGone(t, ld, opt)
}
