//go:build linux

package farmtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/internal/farmtest"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// waitLimit bounds each wait for the farm or an agent to get somewhere;
// it is a guard against hanging, not a timing assertion.
const waitLimit = 4 * time.Minute

// replicaFarm starts the farm of the kill tests: 2 api and 2 worker
// processes on a real PostgreSQL and a real MinIO bucket.
func replicaFarm(t *testing.T, cfg farmtest.Config) *farmtest.Farm {
	t.Helper()
	farmtest.RequireTools(t)
	cfg.APIs, cfg.Workers = 2, 2
	cfg.Database = testenv.Postgres(t)
	cfg.S3 = testenv.MinIO(t)
	return farmtest.Start(t, cfg)
}

// mustCLI runs the CLI against every API server and fails the test when
// it fails.
func mustCLI(t *testing.T, f *farmtest.Farm, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	r := f.CLI(ctx, args...)
	if r.Code != 0 {
		t.Fatalf("bpfarm %s: exit %d: %s%s", strings.Join(args, " "), r.Code, r.Stderr, r.Stdout)
	}
	return r.Stdout
}

// agentEnv skips (or fails, when strict) without what an agent needs to
// load programs on this host: root and bpffs.
func agentEnv(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Require(t, "root", "the agent loads BPF programs")
	}
	if _, err := os.Stat("/sys/fs/bpf"); err != nil {
		testenv.Require(t, "bpffs", err.Error())
	}
}

// pinDir returns a fresh directory on bpffs, emptied (programs unloaded)
// and removed at the end of the test.
func pinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-farmtest-%016x", rand.Uint64()))
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			loader.Unload(e.Name(), loader.Options{PinDir: dir, StateDir: filepath.Join(os.TempDir(), "none")})
		}
		os.RemoveAll(dir)
	})
	return dir
}

// startAgent runs `bpfarm-agent run` with config (YAML), stopped with
// SIGTERM at the end of the test; its output is logged if the test
// failed.
func startAgent(t *testing.T, f *farmtest.Farm, config string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(f.AgentBin, "run", "--config", path)
	w := &lockedBuilder{b: &out}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			w.mu.Lock()
			defer w.mu.Unlock()
			t.Logf("agent output:\n%s", out.String())
		}
	})
}

// waitHostProgram waits until host reports program loaded at revision,
// asking c.
func waitHostProgram(t *testing.T, c *client.Client, host, program, revision string) {
	t.Helper()
	var last *api.Host
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(100 * time.Millisecond) {
		h, err := c.Host(context.Background(), host)
		if err == nil {
			last = h
			for _, p := range h.Programs {
				if p.Program == program && p.State == api.HostProgramLoaded && p.Revision == revision {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s never ran %s at %.12s: %+v (%v)", host, program, revision, last, err)
		}
	}
}

// TestKillAPIReplica: kill -9 the API replica the CLI and an agent talk
// to; both go on through the other one: the CLI pushes and lists, the
// agent (its long poll held by the killed replica) gets and loads the new
// revision.
func TestKillAPIReplica(t *testing.T) {
	agentEnv(t)
	f := replicaFarm(t, farmtest.Config{})
	apis := f.APIs()
	// This host's kernel, from its vmlinux BTF alone (no module BTF:
	// schedcount needs none), under its own id: the agent's kernel.
	h, err := kernel.Host()
	if err != nil {
		t.Fatal(err)
	}
	btf, _ := hostBTF(t)
	mustCLI(t, f, "kernels", "import", btf, "--id", h.ID.String())
	var pushed api.PushResult
	if err := json.Unmarshal([]byte(mustCLI(t, f, "push", filepath.Join(repoRoot(t), "examples", "schedcount"), "--wait", "--json")), &pushed); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, f, "assign", "schedcount", "--selector", "farmtest=kill-api")
	var tok api.TokenCreated
	if err := json.Unmarshal([]byte(mustCLI(t, f, "hosts", "enroll", "farmtest-host", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	startAgent(t, f, fmt.Sprintf(`servers: [%q, %q]
token: %q
name: farmtest-host
labels: {farmtest: kill-api}
state_dir: %q
run_dir: %q
pin_dir: %q
poll: {wait: 60s, heartbeat: 1h, backoff_min: 50ms, backoff_max: 1s}
`, apis[0].URL, apis[1].URL, tok.Secret, t.TempDir(), t.TempDir(), pinDir(t)))
	second := f.Client(apis[1])
	waitHostProgram(t, second, "farmtest-host", "schedcount", pushed.Revision)
	t.Logf("agent runs revision %.12s", pushed.Revision)

	// The agent holds its long poll on the first replica (listed first,
	// and answering): kill it.
	apis[0].Kill()
	killed := time.Now()
	out := mustCLI(t, f, "push", variant(t, "schedcount", "revision 2"), "--wait", "--json")
	var rev2 api.PushResult
	if err := json.Unmarshal([]byte(out), &rev2); err != nil {
		t.Fatal(err)
	}
	if rev2.Revision == pushed.Revision || rev2.Builds[0].State != api.StateSucceeded {
		t.Fatalf("second push: %+v", rev2)
	}
	if out := mustCLI(t, f, "builds", "list", "--program", "schedcount", "--json"); !strings.Contains(out, rev2.Revision) {
		t.Fatalf("builds list through the surviving replica lacks revision %.12s: %s", rev2.Revision, out)
	}
	waitHostProgram(t, second, "farmtest-host", "schedcount", rev2.Revision)
	t.Logf("%s killed; through %s: pushed and built revision %.12s, and the agent runs it, %s after the kill",
		apis[0].Name, apis[1].Name, rev2.Revision, time.Since(killed).Round(time.Millisecond))

	// Back up: both serve the same farm.
	if err := apis[0].Start(); err != nil {
		t.Fatal(err)
	}
	ps, err := f.Client(apis[0]).Programs(context.Background())
	if err != nil || len(ps) != 1 || ps[0].Latest == nil || ps[0].Latest.Digest != rev2.Revision {
		t.Fatalf("restarted replica: %+v %v", ps, err)
	}
}

// TestRandomKills is the random-kill test on a replica set: 2 api and 2
// worker processes on PostgreSQL and MinIO, 20 kills of any of them at
// random during pushes, imports and fan-out, each process started again
// after a moment.
func TestRandomKills(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a farm 20 times (minutes)")
	}
	f := replicaFarm(t, farmtest.Config{WorkerArgs: []string{"--workers", "1", "--relocators", "2"}})
	chaos(t, f, 20, func() *farmtest.Proc { return f.Procs[rand.IntN(len(f.Procs))] })
}

// lockedBuilder is a strings.Builder safe for a process's stdout and
// stderr at once.
type lockedBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
