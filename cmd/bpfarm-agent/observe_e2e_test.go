package main

// End-to-end tests of events and maps: the real server compiles the
// examples, the static agent loads them on this kernel, and the agent's
// events and maps commands decode what the programs write.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// eventLine is one line of events --json.
type eventLine struct {
	Map    string `json:"map"`
	CPU    int    `json:"cpu"`
	Record *struct {
		Pid  int      `json:"pid"`
		Comm string   `json:"comm"`
		Args []string `json:"args"`
	} `json:"record"`
	Raw     string `json:"raw"`
	Warning string `json:"warning"`
	Lost    uint64 `json:"lost"`
}

func pushOK(t *testing.T, f *farm, dir string) {
	t.Helper()
	if r := f.cli("push", dir, "--wait"); r.code != 0 {
		t.Fatalf("push %s: %s", dir, r.stderr)
	}
}

// TestAgentEventsRingBuffer: execsnoop's ring buffer, decoded with the
// declared record type, as JSON and as a table; its globals in maps.
func TestAgentEventsRingBuffer(t *testing.T) {
	root(t)
	f := startFarm(t)
	f.cli("kernels", "import", "--host")
	pushOK(t, f, "../../examples/execsnoop")
	env := agentEnv(t, f.url, readerToken(t, f))
	d := newAgentDirs(t)
	agent := func(args ...string) result { return run(t, env, bin.agent, append(args, d.flags()...)...) }

	if r := agent("load", "execsnoop", "--set", fmt.Sprintf("targ_ppid=%d", os.Getpid())); r.code != 0 {
		t.Fatalf("load: %s", r.stderr)
	}
	defer agent("unload", "execsnoop")

	// The ring buffer keeps records until they are read.
	cmd := exec.Command("/bin/true", "ringbuf-marker-1")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	r := agent("events", "execsnoop", "--json", "--count", "1", "--duration", "30s")
	if r.code != 0 {
		t.Fatalf("events: %d %s", r.code, r.stderr)
	}
	var ev eventLine
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &ev); err != nil {
		t.Fatalf("events --json: %v\n%s", err, r.stdout)
	}
	if ev.Map != "events" || ev.Record == nil || ev.Record.Pid != cmd.Process.Pid || ev.Record.Comm != "true" ||
		len(ev.Record.Args) != 4 || ev.Record.Args[0] != "/bin/true" || ev.Record.Args[1] != "ringbuf-marker-1" {
		t.Fatalf("event %s, want pid %d comm true args [/bin/true ringbuf-marker-1 ...]", r.stdout, cmd.Process.Pid)
	}
	if !strings.Contains(r.stderr, "struct event records, declared") {
		t.Errorf("stderr does not say the record type: %s", r.stderr)
	}

	// A table whose columns are the fields.
	cmd = exec.Command("/bin/true", "ringbuf-marker-2")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	// (The ring buffer also holds the exec of the previous events command,
	// a child of this test too.)
	r = agent("events", "execsnoop", "--count", "2", "--duration", "30s")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 {
		t.Fatalf("events: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, col := range []string{"PID", "PPID", "UID", "COMM", "FILENAME", "ARGS"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q has no column %s", lines[0], col)
		}
	}
	row := lines[2]
	if strings.Contains(lines[1], "ringbuf-marker-2") {
		row = lines[1]
	}
	if f := strings.Fields(row); len(f) < 5 || f[0] != fmt.Sprint(cmd.Process.Pid) || f[3] != "true" || !strings.Contains(row, "[/bin/true ringbuf-marker-2  ]") {
		t.Errorf("row %q", row)
	}

	// Globals: the .rodata the load set.
	r = agent("maps", "execsnoop")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("targ_ppid = %d", os.Getpid())) || !strings.Contains(r.stdout, "min_uid = 0") {
		t.Errorf("maps: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// A ring buffer is no table.
	if r = agent("maps", "execsnoop", "events"); r.code != 1 || !strings.Contains(r.stderr, "follow its records") {
		t.Errorf("maps on a ring buffer: %d %s", r.code, r.stderr)
	}
}

// TestAgentLoadFollowPerf: load --follow on a perf event array with an
// inferred record type; Ctrl-C ends the stream and leaves it loaded.
func TestAgentLoadFollowPerf(t *testing.T) {
	root(t)
	f := startFarm(t)
	f.cli("kernels", "import", "--host")
	pushOK(t, f, "../../examples/execsnoop-perf")
	env := agentEnv(t, f.url, readerToken(t, f))
	d := newAgentDirs(t)
	defer run(t, env, bin.agent, append([]string{"unload", "execsnoop-perf"}, d.flags()...)...)

	cmd := exec.Command(bin.agent, append([]string{"load", "execsnoop-perf", "--follow", "--json"}, d.flags()...)...)
	cmd.Env = env
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ready := make(chan string, 1)
	var errLog strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errLog.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "following ") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		if !strings.Contains(line, "PerfEventArray events") || !strings.Contains(line, "struct event records, inferred") {
			t.Errorf("following line %q", line)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("load --follow did not start following")
	}

	found := make(chan eventLine, 1)
	var pids []int
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev eventLine
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("line %q: %v", sc.Text(), err)
				continue
			}
			if ev.Record != nil && len(ev.Record.Args) > 1 && ev.Record.Args[1] == "perf-marker" {
				found <- ev
				return
			}
		}
	}()
	var got eventLine
	deadline := time.After(time.Minute)
wait:
	for {
		c := exec.Command("/bin/true", "perf-marker")
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, c.Process.Pid)
		select {
		case got = <-found:
			break wait
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no perf-marker exec seen; stderr:\n%s", errLog.String())
		}
	}
	if got.Map != "events" || got.Record.Comm != "true" || got.Record.Args[0] != "/bin/true" || got.CPU < 0 {
		t.Errorf("event %+v", got)
	}
	okPid := false
	for _, p := range pids {
		okPid = okPid || p == got.Record.Pid
	}
	if !okPid {
		t.Errorf("pid %d is none of the markers' %v", got.Record.Pid, pids)
	}

	// Ctrl-C: exit 0, programs still loaded.
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("load --follow after Ctrl-C: %v\n%s", err, errLog.String())
	}
	l := status(t, env, d, "execsnoop-perf")
	if l == nil || len(l.Programs) != 2 || !l.Programs[0].Attached || !l.Programs[1].Attached {
		t.Errorf("after Ctrl-C: %+v", l)
	}
}

// TestAgentMapsHistogram: runqlat's log2 histograms on scheduler
// tracepoints, one chart per struct key; and the refusals.
func TestAgentMapsHistogram(t *testing.T) {
	root(t)
	f := startFarm(t)
	f.cli("kernels", "import", "--host")
	pushOK(t, f, "../../examples/runqlat")
	env := agentEnv(t, f.url, readerToken(t, f))
	d := newAgentDirs(t)
	agent := func(args ...string) result { return run(t, env, bin.agent, append(args, d.flags()...)...) }
	if r := agent("load", "runqlat"); r.code != 0 {
		t.Fatalf("load: %s", r.stderr)
	}
	defer agent("unload", "runqlat")

	// Make the scheduler work.
	for range 50 {
		exec.Command("/bin/true").Run()
		time.Sleep(10 * time.Millisecond)
	}

	r := agent("maps", "runqlat", "hist")
	if r.code != 0 || !strings.Contains(r.stdout, "hist (Array, key u32, value struct hist)") ||
		!strings.Contains(r.stdout, ": count    distribution") || !strings.Contains(r.stdout, "|*") {
		t.Fatalf("maps hist: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	r = agent("maps", "runqlat", "hists", "--json")
	if r.code != 0 {
		t.Fatalf("maps hists --json: %d %s", r.code, r.stderr)
	}
	var dump struct {
		KeyType string `json:"key_type"`
		Entries []struct {
			Key struct {
				Tgid uint32 `json:"tgid"`
				Comm string `json:"comm"`
			} `json:"key"`
			Value struct {
				Slots []struct{ Low, High, Count uint64 } `json:"slots"`
			} `json:"value"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &dump); err != nil {
		t.Fatalf("maps --json: %v\n%s", err, r.stdout)
	}
	if dump.KeyType != "struct hkey" || len(dump.Entries) == 0 {
		t.Fatalf("dump %+v", dump)
	}
	var total uint64
	keyed := 0
	for _, e := range dump.Entries {
		if e.Key.Comm != "" && e.Key.Tgid != 0 {
			keyed++
		}
		for i, b := range e.Value.Slots {
			total += b.Count
			if lo, hi := slotRange(i); b.Low != lo || b.High != hi {
				t.Errorf("bucket %d: %d..%d", i, b.Low, b.High)
			}
		}
	}
	if keyed == 0 || total == 0 {
		t.Errorf("no decoded keys (%d) or counts (%d): %s", keyed, total, r.stdout)
	}
	// Text: one chart per key.
	r = agent("maps", "runqlat", "hists")
	if r.code != 0 || strings.Count(r.stdout, "distribution") < 2 || !strings.Contains(r.stdout, "key {tgid=") {
		t.Errorf("maps hists: %d\n%s", r.code, r.stdout)
	}

	// No ring buffers or perf arrays: exit 1 with the reason.
	r = agent("events", "runqlat", "--count", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "no ring buffers or perf event arrays") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("events on runqlat: %d %q", r.code, r.stderr)
	}
	// A map that is not pinned: one clear line.
	if err := os.Remove(filepath.Join(d.pin, "runqlat", "maps", "hist")); err != nil {
		t.Fatal(err)
	}
	r = agent("maps", "runqlat", "hist")
	if r.code != 1 || !strings.Contains(r.stderr, "map hist of runqlat is not pinned") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("maps on an unpinned map: %d %q", r.code, r.stderr)
	}
	// Not loaded at all.
	r = agent("maps", "nosuchset")
	if r.code != 1 || !strings.Contains(r.stderr, "not loaded") {
		t.Errorf("maps on a set not loaded: %d %q", r.code, r.stderr)
	}
}

// slotRange is the range of log2 slot i.
func slotRange(i int) (uint64, uint64) {
	if i == 0 {
		return 0, 1
	}
	return 1 << i, 1<<(i+1) - 1
}

// TestAgentEventsBadRecord: a record shorter than its declared type is
// shown raw with a warning, and the stream goes on.
func TestAgentEventsBadRecord(t *testing.T) {
	root(t)
	f := startFarm(t)
	f.cli("kernels", "import", "--host")
	pushOK(t, f, "testdata/badrecord")
	env := agentEnv(t, f.url, readerToken(t, f))
	d := newAgentDirs(t)
	agent := func(args ...string) result { return run(t, env, bin.agent, append(args, d.flags()...)...) }
	if r := agent("load", "badrecord", "--set", fmt.Sprintf("targ_tgid=%d", os.Getpid())); r.code != 0 {
		t.Fatalf("load: %s", r.stderr)
	}
	defer agent("unload", "badrecord")
	syscall.Getppid()
	syscall.Getppid()

	r := agent("events", "badrecord", "--json", "--count", "4", "--duration", "30s")
	if r.code != 0 {
		t.Fatalf("events: %d %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), r.stdout)
	}
	for i, line := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if i%2 == 0 {
			rec, _ := ev["record"].(map[string]any)
			if rec == nil || rec["tag"] != "good" || rec["seq"] != float64(i/2) {
				t.Errorf("line %d: %s", i, line)
			}
		} else if ev["raw"] == nil || !strings.Contains(fmt.Sprint(ev["warning"]), "record of 12 bytes, but struct rec has 16") {
			t.Errorf("line %d: %s", i, line)
		}
	}
	if !strings.Contains(r.stderr, "warning: events: record of 12 bytes") {
		t.Errorf("no warning on stderr: %s", r.stderr)
	}

	// Text mode too.
	syscall.Getppid()
	r = agent("events", "badrecord", "--count", "2", "--duration", "30s")
	if r.code != 0 || !strings.Contains(r.stdout, "raw 0x") || !strings.Contains(r.stdout, "good") {
		t.Errorf("events text: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}
