//go:build linux

package farmtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/blob"
)

// Process roles (bpfarm serve --role).
const (
	RoleAll    = "all"
	RoleAPI    = "api"
	RoleWorker = "worker"
)

// ReadyTimeout bounds the wait for a process to answer /readyz; it is a
// guard against hanging on a loaded machine, not a timing assertion.
const ReadyTimeout = 2 * time.Minute

// Config describes a farm.
type Config struct {
	// APIs and Workers are the numbers of processes of role api and of
	// role worker. With both 0 the farm is one process of role all (the
	// default role, so no --role flag is passed).
	APIs, Workers int
	// Database is the --database URL every process shares (postgres://…
	// from testenv.Postgres). Empty: the SQLite default in the data
	// directory, which only one process may use.
	Database string
	// S3 is the bucket every process keeps its blobs in (testenv.MinIO);
	// with no Endpoint, blobs stay in the process's data directory, which
	// only one process may use.
	S3 blob.S3Config
	// Args are added to every process's serve flags; APIArgs and
	// WorkerArgs to those of one role only (after Args, so they win).
	Args, APIArgs, WorkerArgs []string
}

// Farm is a running farm.
type Farm struct {
	t   testing.TB
	cfg Config
	// Bin and AgentBin are the built bpfarm and bpfarm-agent binaries.
	Bin, AgentBin string
	// Admin is the admin token.
	Admin string
	// SecretKeyFile is the --secret-key-file every process of a replica
	// set reads (empty for a single process).
	SecretKeyFile string
	// Procs are the processes: the API processes first (or the single
	// process of role all), then the workers.
	Procs []*Proc
	dir   string
}

// Proc is one `bpfarm serve` process of a farm.
type Proc struct {
	// Name is the process's name in logs: api-0, worker-1, all.
	Name string
	// Role is RoleAll, RoleAPI or RoleWorker.
	Role string
	// Addr is its listen address; URL is http://Addr. Both stay the same
	// across restarts.
	Addr, URL string
	// Data is its data directory (kept across restarts).
	Data string

	f    *Farm
	args []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}       // closed when cmd ended
	log     *testenv.TailBuffer // every start's output, with a line per start
	starts  int
	logFile *os.File
}

// Start starts a farm as cfg says and waits until every process is ready.
// The first process starts alone (it creates the admin token and the
// shared signing key), then the others at once. Everything is stopped at
// the end of the test; the processes' output is logged if it failed.
func Start(t testing.TB, cfg Config) *Farm {
	t.Helper()
	RequireTools(t)
	replicas := cfg.APIs+cfg.Workers > 0
	if replicas && cfg.APIs == 0 {
		t.Fatal("farmtest: a replica set needs at least one api process")
	}
	if replicas && cfg.Database == "" && cfg.APIs+cfg.Workers > 1 {
		t.Fatal("farmtest: several processes need a shared Database")
	}
	if replicas && cfg.S3.Endpoint == "" && cfg.APIs+cfg.Workers > 1 {
		t.Fatal("farmtest: several processes need a shared S3 bucket")
	}
	bins := Binaries(t)
	f := &Farm{t: t, cfg: cfg, Bin: bins.Bpfarm, AgentBin: bins.Agent, dir: t.TempDir()}
	if replicas {
		f.SecretKeyFile = filepath.Join(f.dir, "secret.key")
		key := make([]byte, 32)
		rand.Read(key)
		if err := os.WriteFile(f.SecretKeyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	add := func(name, role string) {
		p := &Proc{Name: name, Role: role, Addr: testenv.FreeAddr(t), Data: filepath.Join(f.dir, name), f: f}
		p.URL = "http://" + p.Addr
		f.Procs = append(f.Procs, p)
	}
	if !replicas {
		add("all", RoleAll)
	}
	for i := range cfg.APIs {
		add(fmt.Sprintf("api-%d", i), RoleAPI)
	}
	for i := range cfg.Workers {
		add(fmt.Sprintf("worker-%d", i), RoleWorker)
	}
	t.Cleanup(f.stop)

	first := f.Procs[0]
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	admin, err := first.adminToken()
	if err != nil {
		t.Fatalf("farmtest: %v\n%s", err, first.Log())
	}
	f.Admin = admin
	errs := make([]error, len(f.Procs))
	var wg sync.WaitGroup
	for i, p := range f.Procs[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = p.Start()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return f
}

// RequireTools skips (or, when strict, fails) the test without what the
// server needs to compile: clang-19, bwrap and bpftool.
func RequireTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"clang-19", "bwrap", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Require(t, tool, "the server compiles with clang-19 in bubblewrap (make deps installs them)")
		}
	}
}

// APIs returns the processes that serve the API (role api or all).
func (f *Farm) APIs() []*Proc {
	return slices.DeleteFunc(slices.Clone(f.Procs), func(p *Proc) bool { return p.Role == RoleWorker })
}

// Workers returns the processes that run jobs (role worker or all).
func (f *Farm) Workers() []*Proc {
	return slices.DeleteFunc(slices.Clone(f.Procs), func(p *Proc) bool { return p.Role == RoleAPI })
}

// Servers is the CLI's and the agent's --server value: every API URL,
// comma-separated.
func (f *Farm) Servers() string {
	var urls []string
	for _, p := range f.APIs() {
		urls = append(urls, p.URL)
	}
	return strings.Join(urls, ",")
}

// Client returns an admin client of the API process p.
func (f *Farm) Client(p *Proc) *client.Client {
	f.t.Helper()
	c, err := client.New(p.URL, f.Admin)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// ClientAll returns an admin client of every API process (failing over
// from one to the next, as `bpfarm --server a,b` does).
func (f *Farm) ClientAll() *client.Client {
	f.t.Helper()
	c, err := client.New(f.Servers(), f.Admin)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// Live returns an admin client of an API process that is running now.
func (f *Farm) Live() *client.Client {
	f.t.Helper()
	for _, p := range f.APIs() {
		if p.Running() {
			return f.Client(p)
		}
	}
	f.t.Fatal("farmtest: no API process is running")
	return nil
}

// Result is what a CLI run printed and its exit code.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// CLI runs the bpfarm CLI with the admin token against every API process
// (--server with all of them) in a fresh directory, bounded by ctx.
func (f *Farm) CLI(ctx context.Context, args ...string) Result {
	return f.CLIWith(ctx, f.Servers(), f.Admin, args...)
}

// CLIWith runs the bpfarm CLI against servers (a --server value) with
// token.
func (f *Farm) CLIWith(ctx context.Context, servers, token string, args ...string) Result {
	cmd := exec.CommandContext(ctx, f.Bin, args...)
	cmd.Env = append(os.Environ(), "BPFARM_SERVER="+servers, "BPFARM_TOKEN="+token)
	cmd.Dir = f.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		r.Code, r.Stderr = -1, err.Error()
	}
	return r
}

// Logs returns every process's output (the last part of it), each under a
// header line: for failure messages.
func (f *Farm) Logs() string {
	var b strings.Builder
	for _, p := range f.Procs {
		fmt.Fprintf(&b, "==== %s (%s, %s) ====\n%s\n", p.Name, p.Role, p.URL, p.Log())
	}
	return b.String()
}

// stop stops every process, gracefully (SIGTERM) with a bound, and logs
// their output if the test failed.
func (f *Farm) stop() {
	var wg sync.WaitGroup
	for _, p := range f.Procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop()
		}()
	}
	wg.Wait()
	if f.t.Failed() {
		f.t.Logf("farm processes' output:\n%s", f.Logs())
	}
	for _, p := range f.Procs {
		if p.logFile != nil {
			p.logFile.Close()
		}
	}
}

// args returns the serve flags of p.
func (p *Proc) serveArgs() []string {
	f := p.f
	args := []string{"serve", "--addr", p.Addr, "--data", p.Data,
		"--no-host-kernel", "--verify-vms=-1", "--gc-interval=-1s", "--log-level", "info"}
	if p.Role != RoleAll {
		args = append(args, "--role", p.Role, "--secret-key-file", f.SecretKeyFile)
	}
	if f.cfg.Database != "" {
		args = append(args, "--database", f.cfg.Database)
	}
	if s3 := f.cfg.S3; s3.Endpoint != "" {
		args = append(args, "--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket,
			"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey)
		if s3.Insecure {
			args = append(args, "--s3-insecure")
		}
	}
	args = append(args, f.cfg.Args...)
	switch p.Role {
	case RoleAPI:
		args = append(args, f.cfg.APIArgs...)
	case RoleWorker:
		args = append(args, f.cfg.WorkerArgs...)
	}
	return args
}

// Start starts the process (again, after Kill or Stop) on its address and
// data directory, and waits until it answers /readyz. Its error holds the
// process's output.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("farmtest: %s is already running", p.Name)
	}
	if p.logFile == nil {
		lf, err := os.Create(filepath.Join(p.f.dir, p.Name+".log"))
		if err != nil {
			return err
		}
		p.logFile, p.log = lf, testenv.NewTailBuffer(256<<10)
	}
	p.starts++
	fmt.Fprintf(p.writer(), "---- farmtest: start %d of %s at %s ----\n", p.starts, p.Name, time.Now().UTC().Format("15:04:05.000"))
	cmd := exec.Command(p.f.Bin, p.serveArgs()...)
	cmd.Stdout, cmd.Stderr = p.writer(), p.writer()
	// Its own process group (Kill takes its compiles too), killed by the
	// kernel if the test process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("farmtest: start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(p.writer(), "---- farmtest: %s exited: %v ----\n", p.Name, err)
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(ReadyTimeout)
	for {
		select {
		case <-exited:
			p.cmd = nil
			return fmt.Errorf("farmtest: %s exited before it was ready:\n%s", p.Name, p.log)
		default:
		}
		if resp, err := hc.Get(p.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("farmtest: %s not ready at %s/readyz after %v:\n%s", p.Name, p.URL, ReadyTimeout, p.log)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (p *Proc) writer() *lockedMulti { return &lockedMulti{p: p} }

// lockedMulti writes a process's output to its log file and its tail.
type lockedMulti struct{ p *Proc }

func (w *lockedMulti) Write(b []byte) (int, error) {
	w.p.log.Write(b)
	return w.p.logFile.Write(b)
}

// Kill kills the process and everything it started (its compiles) with
// SIGKILL, without warning, and waits until it is gone.
func (p *Proc) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	fmt.Fprintf(p.writer(), "---- farmtest: kill -9 %s at %s ----\n", p.Name, time.Now().UTC().Format("15:04:05.000"))
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// Stop stops the process as an orchestrator does: SIGTERM, then SIGKILL
// after 15 seconds.
func (p *Proc) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	// Whatever it left in its group (compiles) goes too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd = nil
}

// Running reports whether the process was started and not killed or
// stopped since.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pid returns the process id, or 0 when it is not running.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Log returns the last 256 KiB of the process's output over all its
// starts.
func (p *Proc) Log() string {
	if p.log == nil {
		return ""
	}
	return p.log.String()
}

// Children returns the ids of the processes the process started that are
// still running (its compile sandboxes), from /proc.
func (p *Proc) Children() []int {
	pid := p.Pid()
	if pid == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, id)
		}
	}
	return kids
}

// RSS returns the process's resident set size in bytes (VmRSS).
func (p *Proc) RSS() (int64, error) {
	pid := p.Pid()
	if pid == 0 {
		return 0, fmt.Errorf("farmtest: %s is not running", p.Name)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("farmtest: no VmRSS in /proc/%d/status", pid)
}

// Metrics scrapes the process's /metrics into a map from series (name
// and labels as written, e.g. `bpfarm_builds_total{result="succeeded"}`)
// to value.
func (p *Proc) Metrics() (map[string]float64, error) {
	hc := &http.Client{Timeout: time.Minute}
	resp, err := hc.Get(p.URL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("farmtest: %s/metrics: %s", p.URL, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// adminToken reads the admin token the first start created: from
// DATA/admin.token, else from the line the server printed.
func (p *Proc) adminToken() (string, error) {
	if b, err := os.ReadFile(filepath.Join(p.Data, "admin.token")); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	for line := range strings.Lines(p.Log()) {
		if _, tok, ok := strings.Cut(line, "admin token"); ok {
			if i := strings.LastIndex(tok, ": "); i >= 0 {
				return strings.TrimSpace(tok[i+2:]), nil
			}
		}
	}
	return "", fmt.Errorf("%s printed no admin token and wrote no %s", p.Name, filepath.Join(p.Data, "admin.token"))
}
