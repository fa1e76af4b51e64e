package main

// End-to-end tests of the agent: the real server and CLI binaries, the
// static agent binary with no clang on its PATH, real kernel loads.

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

var bin struct{ farm, agent string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bpfarm-agent-e2e")
	if err != nil {
		panic(err)
	}
	bin.farm, bin.agent = filepath.Join(dir, "bpfarm"), filepath.Join(dir, "bpfarm-agent")
	for _, b := range []struct{ out, pkg, cgo string }{{bin.farm, "../bpfarm", "1"}, {bin.agent, ".", "0"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type farm struct {
	t          testing.TB
	url, admin string
	data       string
	cmd        *exec.Cmd
	log        bytes.Buffer
}

func startFarm(t testing.TB, extra ...string) *farm {
	t.Helper()
	for _, tool := range []string{"clang-19", "bwrap", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Require(t, tool, "the server compiles with clang-19 in bubblewrap (make deps installs them)")
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	f := &farm{t: t, url: "http://" + addr, data: t.TempDir()}
	f.cmd = exec.Command(bin.farm, append([]string{"serve", "--addr", addr, "--data", f.data}, extra...)...)
	f.cmd.Stdout, f.cmd.Stderr = &f.log, &f.log
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
		f.cmd.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", f.log.String())
		}
	})
	for deadline := time.Now().Add(time.Minute); ; {
		if resp, err := http.Get(f.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready:\n%s", f.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(f.data, "admin.token"))
	f.admin = strings.TrimSpace(string(b))
	return f
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t testing.TB, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *farm) cli(args ...string) result {
	return run(f.t, append(os.Environ(), "BPFARM_SERVER="+f.url, "BPFARM_TOKEN="+f.admin), bin.farm, args...)
}

// agentEnv has no clang on PATH: the agent must not need it.
func agentEnv(t *testing.T, server, token string) []string {
	return []string{"PATH=" + t.TempDir(), "HOME=" + t.TempDir(), "BPFARM_SERVER=" + server, "BPFARM_TOKEN=" + token}
}

// agentDirs are per-test pin, state and cache directories.
type agentDirs struct{ pin, state, cache string }

func newAgentDirs(t *testing.T) agentDirs {
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-e2e-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	t.Cleanup(func() { os.RemoveAll(pin) })
	return agentDirs{pin: pin, state: t.TempDir(), cache: t.TempDir()}
}

func (d agentDirs) flags() []string {
	return []string{"--pin-dir", d.pin, "--state-dir", d.state, "--cache-dir", d.cache}
}

func root(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Require(t, "root", "loading BPF programs needs root (CAP_BPF, CAP_SYS_ADMIN)")
	}
}

func readerToken(t *testing.T, f *farm) string {
	r := f.cli("tokens", "create", "--role", "reader", "--name", "agent")
	if r.code != 0 {
		t.Fatalf("tokens create: %s", r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// openatCount reads schedcount's openat_count map through its pin.
func openatCount(t *testing.T, l *loader.Loaded) uint64 {
	t.Helper()
	for _, m := range l.Maps {
		if m.Name == "openat_count" {
			mp, err := ebpf.LoadPinnedMap(m.Pinned, nil)
			if err != nil {
				t.Fatalf("open pinned map %s: %v", m.Pinned, err)
			}
			defer mp.Close()
			var v []byte
			if err := mp.Lookup(uint32(0), &v); err != nil {
				t.Fatal(err)
			}
			return binary.NativeEndian.Uint64(v)
		}
	}
	t.Fatalf("no openat_count map in %+v", l.Maps)
	return 0
}

func status(t *testing.T, env []string, d agentDirs, name string) *loader.Loaded {
	t.Helper()
	r := run(t, env, bin.agent, append([]string{"status", "--json"}, d.flags()...)...)
	if r.code != 0 {
		t.Fatalf("status: %d %s", r.code, r.stderr)
	}
	var ls []loader.Loaded
	if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	for i := range ls {
		if ls[i].Name == name {
			return &ls[i]
		}
	}
	return nil
}

// progIDs lists the ids of every BPF program loaded in the kernel.
func progIDs(t *testing.T) []uint32 {
	out, err := exec.Command("bpftool", "prog", "show", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var progs []struct {
		ID uint32 `json:"id"`
	}
	json.Unmarshal(out, &progs)
	var ids []uint32
	for _, p := range progs {
		ids = append(ids, p.ID)
	}
	return ids
}

// TestAgentLoad: push → agent load (no clang on PATH) → the program counts
// events (read back from its map) → unload leaves nothing behind; the same
// counts with the host's BTF, the minimized BTF and the pre-relocated object.
func TestAgentLoad(t *testing.T) {
	root(t)
	f := startFarm(t)
	if r := f.cli("kernels", "import", "--host"); r.code != 0 {
		t.Fatalf("import host: %s", r.stderr)
	}
	if r := f.cli("push", "../../examples/schedcount", "--wait"); r.code != 0 {
		t.Fatalf("push: %s", r.stderr)
	}
	env := agentEnv(t, f.url, readerToken(t, f))
	const opens = 40
	deltas := map[string]uint64{}
	for _, mode := range []string{"host-btf", "min-btf", "relocated"} {
		d := newAgentDirs(t)
		name := "schedcount"
		args := append([]string{"load", name, "--mode", mode, "--programs", "count_openat",
			"--set", fmt.Sprintf("targ_tgid=%d", os.Getpid())}, d.flags()...)
		r := run(t, env, bin.agent, args...)
		if r.code != 0 {
			t.Fatalf("%s: agent load: %d\n%s\n%s", mode, r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "count_openat") || !strings.Contains(r.stdout, "sys_enter_openat") {
			t.Errorf("%s: load output does not say what it attached:\n%s", mode, r.stdout)
		}
		l := status(t, env, d, name)
		if l == nil || l.Mode != mode || len(l.Programs) != 1 || !l.Programs[0].Attached {
			t.Fatalf("%s: status %+v", mode, l)
		}
		loadedID := l.Programs[0].ID
		before := openatCount(t, l)
		for range opens {
			fd, err := os.Open("/etc/hostname")
			if err != nil {
				t.Fatal(err)
			}
			fd.Close()
		}
		deltas[mode] = openatCount(t, l) - before
		if r := run(t, env, bin.agent, append([]string{"unload", name}, d.flags()...)...); r.code != 0 {
			t.Fatalf("%s: unload: %s", mode, r.stderr)
		}
		if slices.Contains(progIDs(t), loadedID) {
			t.Errorf("%s: program %d (count_openat) still loaded after unload", mode, loadedID)
		}
		if _, err := os.Stat(filepath.Join(d.pin, name)); !os.IsNotExist(err) {
			t.Errorf("%s: pin directory left behind: %v", mode, err)
		}
	}
	t.Logf("openat counts per mode after %d opens: %v", opens, deltas)
	for mode, n := range deltas {
		if n < opens || n != deltas["host-btf"] {
			t.Errorf("mode %s counted %d, host-btf %d, want >= %d and equal", mode, n, deltas["host-btf"], opens)
		}
	}
}

// TestAgentNoAttach: --no-attach loads and pins exactly the programs
// `bpftool prog loadall` loads.
func TestAgentNoAttach(t *testing.T) {
	root(t)
	f := startFarm(t)
	f.cli("kernels", "import", "--host")
	if r := f.cli("push", "../../examples/schedcount", "--wait"); r.code != 0 {
		t.Fatalf("push: %s", r.stderr)
	}
	env := agentEnv(t, f.url, readerToken(t, f))
	d := newAgentDirs(t)
	if r := run(t, env, bin.agent, append([]string{"load", "schedcount", "--no-attach"}, d.flags()...)...); r.code != 0 {
		t.Fatalf("load --no-attach: %s", r.stderr)
	}
	defer run(t, env, bin.agent, append([]string{"unload", "schedcount"}, d.flags()...)...)
	l := status(t, env, d, "schedcount")
	var ours []string
	for _, p := range l.Programs {
		if p.Attached {
			t.Errorf("%s attached with --no-attach", p.Name)
		}
		ours = append(ours, p.Name)
	}
	// bpftool on the object relocated for this host.
	out := t.TempDir()
	kid := strings.TrimSpace(f.cli("kernels", "list", "--json").stdout)
	var ks []struct{ ID string }
	json.Unmarshal([]byte(kid), &ks)
	if r := f.cli("artifact", "get", "schedcount", "--kernel", ks[0].ID, "-o", out); r.code != 0 {
		t.Fatalf("artifact get: %s", r.stderr)
	}
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-loadall-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	if b, err := exec.Command("bpftool", "prog", "loadall", filepath.Join(out, "schedcount.relocated.bpf.o"), pin).CombinedOutput(); err != nil {
		t.Fatalf("bpftool prog loadall: %v %s", err, b)
	}
	ents, _ := os.ReadDir(pin)
	var theirs []string
	for _, e := range ents {
		theirs = append(theirs, e.Name())
	}
	slices.Sort(ours)
	slices.Sort(theirs)
	if !slices.Equal(ours, theirs) {
		t.Errorf("--no-attach loaded %v, bpftool prog loadall %v", ours, theirs)
	}
}

// TestAgentRefusesTampered: a blob altered in transit is refused, and so is
// a manifest signed by another key.
func TestAgentRefusesTampered(t *testing.T) {
	root(t)
	f := startFarm(t)
	f.cli("kernels", "import", "--host")
	if r := f.cli("push", "../../examples/schedcount", "--wait"); r.code != 0 {
		t.Fatalf("push: %s", r.stderr)
	}
	token := readerToken(t, f)
	target, _ := url.Parse(f.url)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasPrefix(resp.Request.URL.Path, "/api/v1/blobs/") {
			return nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(b) > 100 {
			b[100] ^= 0xff
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	}
	evil := httptest.NewServer(proxy)
	defer evil.Close()
	d := newAgentDirs(t)
	// Pin the real key first, through the honest server.
	key := filepath.Join(t.TempDir(), "key.pem")
	var k struct{ PEM string }
	resp, err := http.Get(f.url + "/api/v1/signing-key")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&k)
	resp.Body.Close()
	os.WriteFile(key, []byte(k.PEM), 0o644)

	r := run(t, agentEnv(t, evil.URL, token), bin.agent, append([]string{"load", "schedcount", "--pubkey", key}, d.flags()...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "sha256") {
		t.Errorf("tampered blob: exit %d, stderr %q", r.code, r.stderr)
	}
	if status(t, agentEnv(t, f.url, token), d, "schedcount") != nil {
		t.Error("tampered artifact was loaded")
	}
	// Another key: the manifest does not verify.
	other := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(other, []byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"), 0o644)
	r = run(t, agentEnv(t, f.url, token), bin.agent, append([]string{"load", "schedcount", "--pubkey", other}, d.flags()...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "signature") {
		t.Errorf("wrong key: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestAgentStaticBinary: the agent is static and within its size budget.
func TestAgentStaticBinary(t *testing.T) {
	st, err := os.Stat(bin.agent)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(bin.agent)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("agent is dynamically linked (%v)", p.Type)
		}
	}
	t.Logf("agent binary: %.1f MiB (unstripped test build)", float64(st.Size())/(1<<20))
}

// TestAgentDeps: the agent and the client library never import the server
// (nor, with it, SQLite and cgo); TestAgentStaticBinary proves the static
// CGO_ENABLED=0 build.
func TestAgentDeps(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "../../client/...", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/bpfarm/bpfarm/server") || strings.Contains(pkg, "sqlite") {
			t.Errorf("the agent depends on %s", pkg)
		}
	}
}

// TestServerBinaryDeps: the server and user CLI (cmd/bpfarm) talks to the
// REST API through package client, and never links the agent's daemon or
// loader (shared client packages such as client/decode are fine).
func TestServerBinaryDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../bpfarm").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/bpfarm/bpfarm/client") {
		t.Error("cmd/bpfarm does not use package client")
	}
	for _, pkg := range deps {
		switch pkg {
		case "github.com/bpfarm/bpfarm/client/agent", "github.com/bpfarm/bpfarm/client/loader":
			t.Errorf("cmd/bpfarm depends on %s", pkg)
		}
	}
	// No REST call is written out in the commands: they are package
	// client's.
	for _, dir := range []string{"../bpfarm", "."} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(`"/api/v1/`)) {
				t.Errorf("%s calls the REST API itself: move the call into package client", f)
			}
		}
	}
}
