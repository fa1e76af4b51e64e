package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/manifest"
)

func TestParseConfig(t *testing.T) {
	yml := `
server: https://farm.example
token: secret
name: web-1
labels: {role: web, zone: a}
upload_btf: true
poll:
  wait: 10s
  backoff_max: 2m
`
	cfg, err := ParseConfig([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server != "https://farm.example" || cfg.Labels["zone"] != "a" || !cfg.UploadBTF || cfg.Poll.Wait != 10*time.Second ||
		cfg.Poll.BackoffMax != 2*time.Minute {
		t.Fatalf("yaml: %+v", cfg)
	}
	full, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if full.StateDir != DefaultStateDir || full.CacheDir != filepath.Join(DefaultStateDir, "cache") ||
		full.PinDir != loader.DefaultPinDir || full.RunDir != loader.DefaultStateDir || full.Mode != "auto" ||
		full.Poll.Heartbeat != DefaultHeartbeat || full.Poll.BackoffMin != DefaultBackoffMin {
		t.Fatalf("defaults: %+v", full)
	}
	tok := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	js := fmt.Sprintf(`{"server": "http://127.0.0.1:8080", "token_file": %q, "labels": {"a": "b"}}`, tok)
	cfg, err = ParseConfig([]byte(js))
	if err != nil || cfg.Labels["a"] != "b" {
		t.Fatalf("json: %+v %v", cfg, err)
	}
	if full, err = cfg.withDefaults(); err != nil || full.Token != "s3cret" {
		t.Fatalf("token file: %+v %v", full, err)
	}
	if _, err := ParseConfig([]byte("server: x\nservr: y\n")); err == nil || !strings.Contains(err.Error(), "servr") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Fatal("no server accepted")
	}
	if _, err := (Config{Server: "http://x", Mode: "magic"}).withDefaults(); err == nil {
		t.Fatal("bad mode accepted")
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	prev := time.Duration(0)
	for i := range 10 {
		d := b.next()
		if d < b.cur/2 || d > b.cur || b.cur > b.max {
			t.Fatalf("step %d: %v (cur %v)", i, d, b.cur)
		}
		if b.cur < prev {
			t.Fatalf("backoff shrank: %v after %v", b.cur, prev)
		}
		prev = b.cur
	}
	if b.cur != time.Second {
		t.Fatalf("not capped: %v", b.cur)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

// fakeLoader is an in-memory loader: sets by name, with a link id per
// load, and failures on demand.
type fakeLoader struct {
	mu     sync.Mutex
	sets   map[string]*loader.Loaded
	nextID uint32
	// failRevision makes Load and Swap of that revision fail.
	failRevision string
	// swapDestroys makes a failing Swap take the old set down too (a
	// loader bug the agent must survive).
	swapDestroys bool
	calls        []string
}

func newFakeLoader() *fakeLoader { return &fakeLoader{sets: map[string]*loader.Loaded{}, nextID: 100} }

func (f *fakeLoader) loaded(a *loader.Artifact, opt loader.Options) *loader.Loaded {
	f.nextID++
	rev := opt.Revision
	if rev == "" {
		rev = a.Revision
	}
	return &loader.Loaded{Name: a.Name, Revision: rev, Mode: "host-btf", Since: time.Now(),
		Programs: []loader.ProgramState{{Name: "prog", Attached: true, LinkID: f.nextID}}}
}

func (f *fakeLoader) Load(_ context.Context, a *loader.Artifact, opt loader.Options) (*loader.Loaded, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "load "+a.Name+"@"+a.Revision)
	if a.Revision == f.failRevision {
		return nil, errors.New("load program prog: permission denied: invalid mem access")
	}
	if f.sets[a.Name] != nil {
		return nil, errors.New("already loaded")
	}
	l := f.loaded(a, opt)
	f.sets[a.Name] = l
	return l, nil
}

func (f *fakeLoader) Swap(_ context.Context, old *loader.Loaded, a *loader.Artifact, opt loader.Options) (*loader.Loaded, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "swap "+a.Name+"@"+a.Revision)
	if a.Revision == f.failRevision {
		if f.swapDestroys {
			delete(f.sets, old.Name)
		}
		return nil, errors.New("swap: load program prog: invalid mem access")
	}
	if f.sets[old.Name] == nil {
		return nil, loader.ErrNotLoaded
	}
	l := f.loaded(a, opt)
	f.sets[a.Name] = l
	return l, nil
}

func (f *fakeLoader) Unload(name string, _ loader.Options) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sets[name] == nil {
		return fmt.Errorf("unload %s: %w", name, loader.ErrNotLoaded)
	}
	f.calls = append(f.calls, "unload "+name)
	delete(f.sets, name)
	return nil
}

func (f *fakeLoader) Adopt(name string, _ loader.Options) (*loader.Loaded, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.sets[name]
	if l == nil {
		return nil, loader.ErrNotLoaded
	}
	c := *l
	return &c, nil
}

func (f *fakeLoader) Status(loader.Options) ([]loader.Loaded, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []loader.Loaded
	for _, l := range f.sets {
		out = append(out, *l)
	}
	return out, nil
}

func (f *fakeLoader) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// fakeFetcher serves artifacts of any program and revision, or errors.
type fakeFetcher struct {
	mu   sync.Mutex
	errs map[string]error // program@revision → error
	// reports are the relocation reports of revisions (default: none).
	reports map[string]manifest.Report // revision → report
}

func (f *fakeFetcher) FetchArtifact(_ context.Context, program, kernelID, revision string, opt client.FetchOptions) (*client.Fetched, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[program+"@"+revision]; err != nil {
		return nil, err
	}
	return &client.Fetched{Manifest: &manifest.Manifest{Program: program, Revision: revision, Kernel: kernelID,
		Report: f.reports[revision]}, Object: []byte("obj")}, nil
}

func (f *fakeFetcher) fail(program, revision string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]error{}
	}
	f.errs[program+"@"+revision] = err
}

func writeTestKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newFakeAgent(t *testing.T, serverURL string, l *fakeLoader, f *fakeFetcher, stateDir string) (*Agent, *prometheus.Registry) {
	t.Helper()
	if serverURL == "" {
		serverURL = "http://127.0.0.1:1"
	}
	host := kernel.HostInfo{ID: kernel.ID{Distro: "debian", Version: "12", Arch: "x86_64", Release: "6.1.0-1-amd64"}, HasBTF: true}
	reg := prometheus.NewRegistry()
	a, err := New(Config{Server: serverURL, Name: "h", StateDir: stateDir, PublicKey: writeTestKey(t),
		Poll: PollConfig{BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, Wait: time.Second}},
		Options{Loader: l, Fetcher: f, Registry: reg, Host: &host, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func desired(progs ...api.DesiredProgram) *api.DesiredState {
	return &api.DesiredState{Host: "h", Version: uint64(len(progs) + 1), Programs: progs}
}

func reported(a *Agent, name string) *api.HostProgram {
	for _, p := range a.Report().Programs {
		if p.Program == name {
			return &p
		}
	}
	return nil
}

func sameCalls(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestConverge: load, swap, rollback without retrying, transient and
// permanent fetch failures, pending, options changes and unload, with a
// fake loader and fetcher.
func TestConverge(t *testing.T) {
	ctx := context.Background()
	l, f := newFakeLoader(), &fakeFetcher{}
	a, reg := newFakeAgent(t, "", l, f, t.TempDir())
	dp := func(rev string) api.DesiredProgram {
		return api.DesiredProgram{Program: "p", Revision: rev, Kernel: "debian/12/x86_64/6.1.0-1-amd64"}
	}

	a.converge(ctx, desired(dp("r1")), false)
	if c := l.takeCalls(); !sameCalls(c, "load p@r1") {
		t.Fatalf("first converge: %v", c)
	}
	if p := reported(a, "p"); p == nil || p.State != api.HostProgramLoaded || p.Revision != "r1" || p.Desired != "" {
		t.Fatalf("loaded: %+v", p)
	}
	// The same again: nothing to do.
	a.converge(ctx, desired(dp("r1")), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("converged twice: %v", c)
	}
	a.converge(ctx, desired(dp("r2")), false)
	if c := l.takeCalls(); !sameCalls(c, "swap p@r2") || l.sets["p"].Revision != "r2" {
		t.Fatalf("new revision: %v", c)
	}

	// A revision the loader refuses: rolled back, not retried.
	l.failRevision = "r3"
	a.converge(ctx, desired(dp("r3")), false)
	if c := l.takeCalls(); !sameCalls(c, "swap p@r3") || l.sets["p"].Revision != "r2" {
		t.Fatalf("bad revision: %v", c)
	}
	p := reported(a, "p")
	if p.State != api.HostProgramRolledBack || p.Revision != "r2" || p.Desired != "r3" || !strings.Contains(p.Error, "invalid mem access") {
		t.Fatalf("rollback report: %+v", p)
	}
	if metricSum(t, reg, "bpfarm_agent_rollbacks_total") != 1 {
		t.Fatal("rollback not counted")
	}
	a.converge(ctx, desired(dp("r3")), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("refused revision retried: %v", c)
	}

	// The server unreachable while fetching r4: pending, retried, r2 runs.
	f.fail("p", "r4", &client.APIError{Status: 502, Message: "bad gateway"})
	a.converge(ctx, desired(dp("r4")), false)
	if c := l.takeCalls(); len(c) != 0 || !a.retryPending() {
		t.Fatalf("transient fetch failure: calls %v retry %v", c, a.retryPending())
	}
	if p := reported(a, "p"); p.State != api.HostProgramPending || p.Revision != "r2" {
		t.Fatalf("pending report: %+v", p)
	}
	f.fail("p", "r4", nil)
	a.converge(ctx, desired(dp("r4")), false)
	if c := l.takeCalls(); !sameCalls(c, "swap p@r4") || a.retryPending() {
		t.Fatalf("retry: %v", c)
	}

	// A tampered artifact: refused, r4 keeps running.
	f.fail("p", "r5", fmt.Errorf("artifact of p: %w", &manifest.FileError{Name: "p.bpf.o", What: "sha256", Got: "aa", Wanted: "bb"}))
	a.converge(ctx, desired(dp("r5")), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("tampered artifact loaded: %v", c)
	}
	if p := reported(a, "p"); p.State != api.HostProgramRolledBack || p.Revision != "r4" || !strings.Contains(p.Error, "sha256") {
		t.Fatalf("tampered report: %+v", p)
	}

	// No artifact for the kernel yet: keep running, pending.
	pending := dp("")
	pending.Pending = "no artifact yet"
	a.converge(ctx, desired(pending), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("pending: %v", c)
	}
	if p := reported(a, "p"); p.State != api.HostProgramPending || p.Revision != "r4" || p.Error != "no artifact yet" {
		t.Fatalf("pending report: %+v", p)
	}

	// Other options: swapped in place even at the same revision.
	withOpts := dp("r4")
	withOpts.Options.Attach.Interface = "lo"
	a.converge(ctx, desired(withOpts), false)
	if c := l.takeCalls(); !sameCalls(c, "swap p@r4") {
		t.Fatalf("options change: %v", c)
	}

	// A program loaded by hand is adopted and reported, never unloaded.
	l.sets["manual"] = &loader.Loaded{Name: "manual", Revision: "m1"}
	a.adoptAll(ctx)
	if p := reported(a, "manual"); p == nil || p.State != api.HostProgramLoaded {
		t.Fatalf("manual: %+v", p)
	}
	// Not desired any more: p is unloaded, manual stays.
	a.converge(ctx, desired(), false)
	if c := l.takeCalls(); !sameCalls(c, "unload p") || l.sets["manual"] == nil {
		t.Fatalf("unassigned: %v", c)
	}
	if p := reported(a, "p"); p != nil {
		t.Fatalf("unloaded program still reported: %+v", p)
	}
}

// TestConvergeFirstLoadFails: a first load that fails leaves the program
// failed, and a later revision loads.
func TestConvergeFirstLoadFails(t *testing.T) {
	ctx := context.Background()
	l, f := newFakeLoader(), &fakeFetcher{}
	l.failRevision = "r1"
	a, _ := newFakeAgent(t, "", l, f, t.TempDir())
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r1"}), false)
	if p := reported(a, "p"); p == nil || p.State != api.HostProgramFailed || p.Revision != "" || p.Desired != "r1" {
		t.Fatalf("failed first load: %+v", p)
	}
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r2"}), false)
	if c := l.takeCalls(); !sameCalls(c, "load p@r1", "load p@r2") {
		t.Fatalf("calls: %v", c)
	}
	if p := reported(a, "p"); p.State != api.HostProgramLoaded || p.Revision != "r2" {
		t.Fatalf("second revision: %+v", p)
	}
}

// TestConvergeUnsupported: the daemon doesn't load a revision whose
// report says this kernel lacks a feature a program to load needs: it
// reports it failed with the reason (rolled back when an older revision
// runs), unless the assignment loads only programs the kernel supports.
func TestConvergeUnsupported(t *testing.T) {
	ctx := context.Background()
	const reason = "map events: ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel"
	l := newFakeLoader()
	f := &fakeFetcher{reports: map[string]manifest.Report{"r2": {Programs: []manifest.ProgramReport{
		{Name: "a", Status: manifest.StatusOK}, {Name: "b", Status: manifest.StatusUnsupported, Reason: reason}}}}}
	a, reg := newFakeAgent(t, "", l, f, t.TempDir())
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r2"}), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("loaded an unsupported artifact: %v", c)
	}
	p := reported(a, "p")
	if p == nil || p.State != api.HostProgramFailed || !strings.Contains(p.Error, "program b is unsupported") || !strings.Contains(p.Error, reason) {
		t.Fatalf("unsupported: %+v", p)
	}
	if n := metricSum(t, reg, "bpfarm_agent_operations_total"); n < 1 {
		t.Errorf("operations %v", n)
	}
	// Only program a: supported.
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r2", Options: api.LoadOptions{Programs: []string{"a"}}}), false)
	if c := l.takeCalls(); !sameCalls(c, "load p@r2") {
		t.Fatalf("calls: %v", c)
	}
	// r1 runs; r3 is unsupported: rolled back, r1 keeps running.
	f.reports["r3"] = f.reports["r2"]
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r3"}), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("swapped to an unsupported artifact: %v", c)
	}
	if p := reported(a, "p"); p.State != api.HostProgramRolledBack || p.Revision != "r2" || !strings.Contains(p.Error, reason) {
		t.Fatalf("rolled back: %+v", p)
	}
}

// TestRestoreAfterFailedSwap: when a failed swap took the last good
// revision down, the agent loads it again from the cache.
func TestRestoreAfterFailedSwap(t *testing.T) {
	ctx := context.Background()
	l, f := newFakeLoader(), &fakeFetcher{}
	a, _ := newFakeAgent(t, "", l, f, t.TempDir())
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r1"}), false)
	l.failRevision, l.swapDestroys = "r2", true
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r2"}), false)
	if c := l.takeCalls(); !sameCalls(c, "load p@r1", "swap p@r2", "load p@r1") {
		t.Fatalf("calls: %v", c)
	}
	if p := reported(a, "p"); p.State != api.HostProgramRolledBack || p.Revision != "r1" || l.sets["p"] == nil {
		t.Fatalf("after the restore: %+v", p)
	}
}

// TestRestartAdoptsAndRestores: a restarted agent adopts what runs without
// touching it, and when the server is unreachable it loads, from the
// cache, a managed program whose pins vanished (a reboot).
func TestRestartAdoptsAndRestores(t *testing.T) {
	ctx := context.Background()
	l, f := newFakeLoader(), &fakeFetcher{}
	state := t.TempDir()
	a, _ := newFakeAgent(t, "", l, f, state)
	a.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r1"}, api.DesiredProgram{Program: "q", Revision: "q1"}), false)
	l.takeCalls()

	// Restart: everything adopted, nothing reloaded.
	b, _ := newFakeAgent(t, "", l, f, state)
	b.adoptAll(ctx)
	b.convergeOffline(ctx)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("restart touched programs: %v", c)
	}
	if p := reported(b, "p"); p == nil || p.State != api.HostProgramLoaded || p.Revision != "r1" {
		t.Fatalf("adopted: %+v", p)
	}
	// Back from the server, the same desired state: nothing to do.
	b.converge(ctx, desired(api.DesiredProgram{Program: "p", Revision: "r1"}, api.DesiredProgram{Program: "q", Revision: "q1"}), false)
	if c := l.takeCalls(); len(c) != 0 {
		t.Fatalf("converge after restart: %v", c)
	}

	// A reboot: q's pins are gone; without a server it comes back from the
	// cache (an offline fetch), p is left alone.
	delete(l.sets, "q")
	c, _ := newFakeAgent(t, "", l, f, state)
	c.adoptAll(ctx)
	c.convergeOffline(ctx)
	if calls := l.takeCalls(); !sameCalls(calls, "load q@q1") {
		t.Fatalf("offline restore: %v", calls)
	}
}

// TestOutageKeepsEverything: with the server answering errors, the agent
// retries and never unloads, swaps or loads anything.
func TestOutageKeepsEverything(t *testing.T) {
	var mu sync.Mutex
	registered := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/api/v1/hosts/register" {
			registered++
			json.NewEncoder(w).Encode(api.Host{Name: "h", ArchiveKernel: "debian/12/x86_64/6.1.0-1-amd64"})
			return
		}
		w.WriteHeader(http.StatusBadGateway)
		json.NewEncoder(w).Encode(api.Error{Error: "upstream down"})
	}))
	defer srv.Close()
	l, f := newFakeLoader(), &fakeFetcher{}
	state := t.TempDir()
	a, _ := newFakeAgent(t, srv.URL, l, f, state)
	a.converge(context.Background(), desired(api.DesiredProgram{Program: "p", Revision: "r1"}), false)
	l.takeCalls()

	b, reg := newFakeAgent(t, srv.URL, l, f, state)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	for metricSum(t, reg, "bpfarm_agent_desired_errors_total") < 5 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := l.takeCalls(); len(c) != 0 || l.sets["p"] == nil {
		t.Fatalf("outage touched programs: %v", c)
	}
	mu.Lock()
	defer mu.Unlock()
	if registered == 0 {
		t.Fatal("never registered")
	}
}

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
