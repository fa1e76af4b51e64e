//go:build linux

package agente2e

// Daemon tests against a real in-process server (real clang-19 in the
// sandbox, relocation for this host's kernel) and the real loader (root,
// the running kernel). Only the tests import the server: package agent
// itself never does.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/client/agent"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server"
)

// waitLimit bounds every wait for the server or the agent to get
// somewhere (compiles and relocations included); it is a deadline against
// hanging, not a timing assertion.
const waitLimit = 4 * time.Minute

func requireDaemonEnv(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Require(t, "root", "loading BPF programs needs root")
	}
	for _, tool := range []string{"clang-19", "bwrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Require(t, tool, "the in-process server compiles with clang-19 in bubblewrap (make deps installs them)")
		}
	}
	if h, err := kernel.Host(); err != nil || !h.HasBTF {
		testenv.Require(t, "kernel BTF", "the host kernel's BTF is imported into the server's archive")
	}
}

// farm is an in-process bpfarm server that can be stopped and started
// again on the same address and data directory.
type farm struct {
	t      *testing.T
	data   string
	addr   string
	url    string
	cancel context.CancelFunc
	done   chan error
	admin  *client.Client
}

func startFarm(t *testing.T) *farm {
	t.Helper()
	f := &farm{t: t, data: t.TempDir(), addr: "127.0.0.1:0"}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *farm) start() {
	t := f.t
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	// The port of a stopped server may linger a moment in the kernel.
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", f.addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.url = "http://" + f.addr
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, server.Config{Data: f.data, Listener: ln, Out: io.Discard, Workers: 2, Relocators: 2,
		AgentBTFUpload: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		ln.Close()
		t.Fatal(err)
	}
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- s.Run(ctx) }()
	tok, err := os.ReadFile(filepath.Join(f.data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if f.admin, err = client.New(f.url, strings.TrimSpace(string(tok))); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(f.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
	}
}

func (f *farm) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	if err := <-f.done; err != nil {
		f.t.Errorf("server: %v", err)
	}
	f.cancel = nil
}

// token creates a token of role and returns its secret.
func (f *farm) token(name, role string) string {
	f.t.Helper()
	tok, err := f.admin.CreateToken(context.Background(), name, role)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Secret
}

// hostToken enrolls host name and returns its token (role host), what
// the daemon's config takes.
func (f *farm) hostToken(name string) string {
	f.t.Helper()
	tok, err := f.admin.EnrollHost(context.Background(), name, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Secret
}

// schedcount returns the example schedcount's bundle with edit applied to
// its entry's source.
func schedcount(t *testing.T, edit func(string) string) *bpfsrc.Bundle {
	t.Helper()
	dir := filepath.Join("..", "..", "examples", "schedcount")
	var files []bpfsrc.File
	for _, name := range []string{"schedcount.bpf.c", "schedcount.h"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "schedcount.bpf.c" && edit != nil {
			b = []byte(edit(string(b)))
		}
		files = append(files, bpfsrc.File{Name: name, Data: b})
	}
	b, err := bpfsrc.New("schedcount.bpf.c", files, bpfsrc.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// push pushes a bundle as program name and waits for its build to succeed.
func (f *farm) push(name string, b *bpfsrc.Bundle) string {
	f.t.Helper()
	ctx := context.Background()
	res, err := f.admin.Push(ctx, name, b, client.PushOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, b := range res.Builds {
		done, err := f.admin.WaitBuild(ctx, b.ID, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		if done.State != api.StateSucceeded {
			f.t.Fatalf("build %d of %s: %s: %s", b.ID, name, done.State, done.Error)
		}
	}
	return res.Revision
}

// waitHost polls the server until the host's state satisfies ok.
func (f *farm) waitHost(name, what string, ok func(h *api.Host) bool) *api.Host {
	f.t.Helper()
	hosts := f.admin
	var (
		h   *api.Host
		err error
	)
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(100 * time.Millisecond) {
		h, err = hosts.Host(context.Background(), name)
		if err == nil && ok(h) {
			return h
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("host %s: %s: not reached: %+v %v", name, what, h, err)
		}
	}
}

func hostProgram(h *api.Host, name string) *api.HostProgram {
	for i := range h.Programs {
		if h.Programs[i].Program == name {
			return &h.Programs[i]
		}
	}
	return nil
}

// testAgent is a daemon run for a test.
type testAgent struct {
	t      *testing.T
	a      *agent.Agent
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, cfg agent.Config) *testAgent {
	t.Helper()
	ta := &testAgent{t: t, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	var err error
	ta.a, err = agent.New(cfg, agent.Options{Registry: ta.reg, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	ctx, ta.cancel = context.WithCancel(context.Background())
	go func() { ta.done <- ta.a.Run(ctx) }()
	t.Cleanup(ta.stop)
	return ta
}

// stop stops the daemon as SIGTERM does.
func (ta *testAgent) stop() {
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	if err := <-ta.done; err != nil {
		ta.t.Errorf("agent: %v", err)
	}
	ta.cancel = nil
}

// waitMetric waits until the agent's metric (a counter) reaches n.
func (ta *testAgent) waitMetric(name string, n float64) {
	ta.t.Helper()
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(20 * time.Millisecond) {
		if metricSum(ta.t, ta.reg, name) >= n {
			return
		}
		if time.Now().After(deadline) {
			ta.t.Fatalf("agent metric %s never reached %v", name, n)
		}
	}
}

// testWriter sends the agent's log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// testPinDir returns a fresh directory on bpffs, removed (with whatever
// is still pinned in it) at the end.
func testPinDir(t *testing.T) string {
	t.Helper()
	var raw [6]byte
	rand.Read(raw[:])
	dir := filepath.Join("/sys/fs/bpf", "bpfarm-agent-test-"+hex.EncodeToString(raw[:]))
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			loader.Unload(e.Name(), loader.Options{PinDir: dir, StateDir: filepath.Join(os.TempDir(), "none")})
		}
		os.RemoveAll(dir)
	})
	return dir
}

// linkIDs returns the link IDs of every program of the set name, from the
// loader's state, failing when one is not attached or has vanished.
func linkIDs(t *testing.T, cfg agent.Config, name string) (string, map[string]uint32) {
	t.Helper()
	l, err := loader.Adopt(name, loader.Options{PinDir: cfg.PinDir, StateDir: cfg.RunDir})
	if err != nil {
		t.Fatalf("%s is not loaded intact: %v", name, err)
	}
	ids := map[string]uint32{}
	for _, p := range l.Programs {
		if !p.Attached || p.LinkID == 0 || p.Error != "" {
			t.Fatalf("%s: program %s not attached: %+v", name, p.Name, p)
		}
		ids[p.Name] = p.LinkID
	}
	return l.Revision, ids
}

// openatCount reads schedcount's pinned openat counter.
func openatCount(t *testing.T, cfg agent.Config) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(cfg.PinDir, "schedcount", "maps", "openat_count"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var v []byte
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return binary.NativeEndian.Uint64(v)
}

// requireCounting checks that schedcount still counts openat() calls.
func requireCounting(t *testing.T, cfg agent.Config) {
	t.Helper()
	before := openatCount(t, cfg)
	for range 5 {
		if f, err := os.Open("/proc/self/status"); err == nil {
			f.Close()
		}
	}
	if after := openatCount(t, cfg); after <= before {
		t.Fatalf("schedcount does not count: openat_count %d, then %d", before, after)
	}
}

func sameIDs(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestDaemon walks the daemon through its life: assignment → loaded (after
// uploading this host's BTF), a new revision → swapped, a revision the
// verifier rejects → rolled back and reported, the server stopped →
// everything stays attached and counting, the agent restarted during the
// outage → nothing detached, the server back → state reported, the
// assignment removed → unloaded.
func TestDaemon(t *testing.T) {
	requireDaemonEnv(t)
	f := startFarm(t)
	ctx := context.Background()
	hosts := f.admin

	rev1 := f.push("schedcount", schedcount(t, nil))
	cfg := agent.Config{
		Server: f.url, Token: f.hostToken("test-host"), Name: "test-host",
		Labels:   map[string]string{"role": "test", "zone": "a"},
		StateDir: t.TempDir(), RunDir: t.TempDir(), PinDir: testPinDir(t), UploadBTF: true,
		Poll: agent.PollConfig{Wait: 30 * time.Second, Heartbeat: time.Hour, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
	}
	if _, err := hosts.Assign(ctx, api.AssignmentRequest{Program: "schedcount", Selector: map[string]string{"role": "test"}}); err != nil {
		t.Fatal(err)
	}
	// A newer assignment that selects other hosts only.
	if _, err := hosts.Assign(ctx, api.AssignmentRequest{Program: "schedcount", Selector: map[string]string{"role": "other"}}); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, cfg)

	// The archive lacks this kernel: the agent uploads its BTF, the server
	// relocates schedcount for it, the agent loads it.
	h := f.waitHost("test-host", "schedcount loaded", func(h *api.Host) bool {
		p := hostProgram(h, "schedcount")
		return p != nil && p.State == api.HostProgramLoaded && p.Revision == rev1
	})
	if h.ArchiveKernel == "" || !h.HasBTF || h.Labels["zone"] != "a" {
		t.Fatalf("host: %+v", h)
	}
	rev, ids1 := linkIDs(t, cfg, "schedcount")
	if rev != rev1 {
		t.Fatalf("loaded revision %s, want %s", rev, rev1)
	}
	requireCounting(t, cfg)

	// A new revision: swapped in.
	rev2 := f.push("schedcount", schedcount(t, func(s string) string { return s + "\n/* revision 2 */\n" }))
	f.waitHost("test-host", "schedcount swapped to revision 2", func(h *api.Host) bool {
		p := hostProgram(h, "schedcount")
		return p != nil && p.State == api.HostProgramLoaded && p.Revision == rev2
	})
	rev, ids2 := linkIDs(t, cfg, "schedcount")
	if rev != rev2 {
		t.Fatalf("loaded revision %s, want %s", rev, rev2)
	}
	if sameIDs(ids1, ids2) {
		t.Fatalf("swap kept the old links: %v", ids2)
	}
	requireCounting(t, cfg)

	// A revision the verifier rejects (no NULL check of a hash map
	// value): the swap fails, revision 2 keeps running, rolled_back is
	// reported.
	rev3 := f.push("schedcount", schedcount(t, func(s string) string {
		bad := strings.Replace(s, "\tif (s)\n\t\t__sync_fetch_and_add(&s->switched_in, 1);", "\t__sync_fetch_and_add(&s->switched_in, 1);", 1)
		if bad == s {
			t.Fatal("schedcount.bpf.c changed: cannot make the verifier-rejected revision")
		}
		return bad
	}))
	h = f.waitHost("test-host", "schedcount rolled back", func(h *api.Host) bool {
		p := hostProgram(h, "schedcount")
		return p != nil && p.State == api.HostProgramRolledBack && p.Desired == rev3
	})
	if p := hostProgram(h, "schedcount"); p.Revision != rev2 || !strings.Contains(p.Error, "handle_switch") {
		t.Fatalf("rollback report: %+v", p)
	}
	rev, ids := linkIDs(t, cfg, "schedcount")
	if rev != rev2 || !sameIDs(ids, ids2) {
		t.Fatalf("after the rollback: revision %s links %v, want %s %v", shortRev(rev), ids, shortRev(rev2), ids2)
	}
	requireCounting(t, cfg)

	// The server goes away: nothing changes on the host.
	errsBefore := metricSum(t, ag.reg, "bpfarm_agent_desired_errors_total")
	f.stop()
	ag.waitMetric("bpfarm_agent_desired_errors_total", errsBefore+2)
	rev, ids = linkIDs(t, cfg, "schedcount")
	if rev != rev2 || !sameIDs(ids, ids2) {
		t.Fatalf("during the outage: revision %s links %v, want %s %v", shortRev(rev), ids, shortRev(rev2), ids2)
	}
	requireCounting(t, cfg)

	// The agent restarts during the outage: it adopts everything, detaches
	// nothing.
	ag.stop()
	ag = startAgent(t, cfg)
	ag.waitMetric("bpfarm_agent_adopted_total", 1)
	rev, ids = linkIDs(t, cfg, "schedcount")
	if rev != rev2 || !sameIDs(ids, ids2) {
		t.Fatalf("after the restart: revision %s links %v, want %s %v", shortRev(rev), ids, shortRev(rev2), ids2)
	}
	requireCounting(t, cfg)

	// The server comes back: the agent registers again and reports; it
	// tries revision 3 once more and keeps revision 2.
	restarted := time.Now().UTC()
	f.start()
	h = f.waitHost("test-host", "reported after the server restart", func(h *api.Host) bool {
		p := hostProgram(h, "schedcount")
		return h.ReportedAt != nil && h.ReportedAt.After(restarted) && p != nil && p.State == api.HostProgramRolledBack
	})
	rev, ids = linkIDs(t, cfg, "schedcount")
	if p := hostProgram(h, "schedcount"); p.Revision != rev2 || rev != rev2 || !sameIDs(ids, ids2) {
		t.Fatalf("after the server restart: %+v, links %v", p, ids)
	}

	// Unassigned: unloaded.
	as, err := hosts.Assignments(ctx, "schedcount")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if err := hosts.Unassign(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
	}
	f.waitHost("test-host", "schedcount unloaded", func(h *api.Host) bool { return len(h.Programs) == 0 })
	if ls, err := loader.Status(loader.Options{PinDir: cfg.PinDir, StateDir: cfg.RunDir}); err != nil || len(ls) != 0 {
		t.Fatalf("still loaded: %+v %v", ls, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.PinDir, "schedcount")); !os.IsNotExist(err) {
		t.Fatalf("pins left: %v", err)
	}
}

// TestDaemonRefusesTamperedArtifact: an artifact file altered on the way
// (a proxy flips a byte of every blob) fails its manifest digest; nothing
// is loaded and the host reports the program failed.
func TestDaemonRefusesTamperedArtifact(t *testing.T) {
	requireDaemonEnv(t)
	f := startFarm(t)
	ctx := context.Background()
	// This host's kernel, imported like `bpfarm kernels import --host`.
	k, err := source.Host(source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.ImportKernel(ctx, k, client.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	f.push("schedcount", schedcount(t, nil))

	target, _ := url.Parse(f.url)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var tampered atomic.Int64
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasPrefix(resp.Request.URL.Path, "/api/v1/blobs/") || resp.StatusCode != http.StatusOK {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
			tampered.Add(1)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &http.Server{Handler: proxy}
	go ps.Serve(ln)
	t.Cleanup(func() { ps.Close() })

	cfg := agent.Config{
		Server: "http://" + ln.Addr().String(), Token: f.hostToken("tampered-host"), Name: "tampered-host",
		Labels:   map[string]string{"role": "test"},
		StateDir: t.TempDir(), RunDir: t.TempDir(), PinDir: testPinDir(t),
		Poll: agent.PollConfig{Heartbeat: time.Hour, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
	}
	if _, err := f.admin.Assign(ctx, api.AssignmentRequest{Program: "schedcount"}); err != nil {
		t.Fatal(err)
	}
	startAgent(t, cfg)
	h := f.waitHost("tampered-host", "schedcount refused", func(h *api.Host) bool {
		p := hostProgram(h, "schedcount")
		return p != nil && p.State == api.HostProgramFailed
	})
	if p := hostProgram(h, "schedcount"); !strings.Contains(p.Error, "sha256") || p.Revision != "" {
		t.Fatalf("report: %+v", p)
	}
	if tampered.Load() == 0 {
		t.Fatal("the proxy altered nothing")
	}
	if ls, err := loader.Status(loader.Options{PinDir: cfg.PinDir, StateDir: cfg.RunDir}); err != nil || len(ls) != 0 {
		t.Fatalf("a tampered artifact was loaded: %+v %v", ls, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.PinDir, "schedcount")); !os.IsNotExist(err) {
		t.Fatalf("pins of a tampered artifact: %v", err)
	}
}

// metricSum adds up a counter or gauge's values across labels.
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetCounter() != nil {
				sum += m.GetCounter().GetValue()
			} else if m.GetGauge() != nil {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func shortRev(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
