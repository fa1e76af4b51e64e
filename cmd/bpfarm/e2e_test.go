package main

// End-to-end tests of the contract: the real bpfarm binary, a real server
// process on loopback, real clang-19 in the bubblewrap sandbox.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/store"
)

var bpfarmBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bpfarm-e2e-bin")
	if err != nil {
		panic(err)
	}
	bpfarmBin = filepath.Join(dir, "bpfarm")
	out, err := exec.Command("go", "build", "-o", bpfarmBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build bpfarm: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// farm is a bpfarm server process started for a test.
type farm struct {
	t     *testing.T
	url   string
	data  string
	admin string
	cmd   *exec.Cmd
	log   *bytes.Buffer
	args  []string
}

func requireTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"clang-19", "bwrap", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Require(t, tool, "clang-19, bwrap and bpftool are needed to compile (make deps installs them)")
		}
	}
}

// startFarm starts `bpfarm serve` on a free loopback port with a fresh data
// directory (or data, to restart on an existing one).
func startFarm(t *testing.T, data string, extra ...string) *farm {
	t.Helper()
	requireTools(t)
	if data == "" {
		data = t.TempDir()
	}
	f := &farm{t: t, data: data, args: extra}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *farm) start() {
	t := f.t
	t.Helper()
	addr := testenv.FreeAddr(t)
	f.url = "http://" + addr
	f.log = new(bytes.Buffer)
	// Tests start from an empty archive unless they ask for the host's
	// kernel (--no-host-kernel=false).
	args := append([]string{"serve", "--addr", addr, "--data", f.data, "--workers", "2", "--no-host-kernel"}, f.args...)
	f.cmd = exec.Command(bpfarmBin, args...)
	f.cmd.Stdout, f.cmd.Stderr = f.log, f.log
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(f.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) || f.cmd.ProcessState != nil {
			t.Fatalf("server did not become ready: %v\n%s", err, f.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(f.data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	f.admin = strings.TrimSpace(string(tok))
}

func (f *farm) stop() {
	if f.cmd == nil || f.cmd.Process == nil {
		return
	}
	f.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if f.t.Failed() {
		f.t.Logf("server log:\n%s", f.log)
	}
	f.cmd = nil
}

// kill9 kills the server (and its compiles) without warning.
func (f *farm) kill9() {
	syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
	f.cmd.Wait()
	f.cmd = nil
}

type result struct {
	code           int
	stdout, stderr string
}

// cli runs the bpfarm CLI against the farm with the admin token.
func (f *farm) cli(args ...string) result {
	return f.cliAs(f.admin, args...)
}

func (f *farm) cliAs(token string, args ...string) result {
	f.t.Helper()
	cmd := exec.Command(bpfarmBin, args...)
	cmd.Env = append(os.Environ(), "BPFARM_SERVER="+f.url, "BPFARM_TOKEN="+token)
	cmd.Dir = f.t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// api calls the REST API and decodes a JSON answer into v (if not nil).
func (f *farm) api(method, path, token, contentType string, body io.Reader, v any) (int, []byte) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.url+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, v); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, b
}

func (f *farm) waitBuild(id int64) api.Build {
	f.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var b api.Build
		code, body := f.api("GET", fmt.Sprintf("/api/v1/builds/%d?wait=20s", id), f.admin, "", nil, &b)
		if code != 200 {
			f.t.Fatalf("get build %d: %d %s", id, code, body)
		}
		if b.Done() {
			return b
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("build %d not done: %+v", id, b)
		}
	}
}

func repoRoot(t testing.TB) string {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// exampleDirs lists the buildable examples (every directory but broken).
func exampleDirs(t *testing.T) []string {
	ents, err := os.ReadDir(filepath.Join(repoRoot(t), "examples"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() && e.Name() != "broken" && e.Name() != "testdata" {
			dirs = append(dirs, filepath.Join(repoRoot(t), "examples", e.Name()))
		}
	}
	if len(dirs) < 3 {
		t.Fatalf("want at least 3 example programs, found %v", dirs)
	}
	return dirs
}

func TestPushExamples(t *testing.T) {
	f := startFarm(t, "")
	for _, dir := range exampleDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := f.cli("push", dir, "--wait")
			if r.code != 0 {
				t.Fatalf("push exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			var res api.PushResult
			rj := f.cli("push", dir, "--wait", "--json")
			if rj.code != 0 {
				t.Fatalf("push --json exit %d: %s", rj.code, rj.stderr)
			}
			if err := json.Unmarshal([]byte(rj.stdout), &res); err != nil {
				t.Fatalf("push --json: %v\n%s", err, rj.stdout)
			}
			if len(res.Builds) != 1 || res.Builds[0].State != api.StateSucceeded || res.Builds[0].Inspection == nil {
				t.Fatalf("builds: %+v", res.Builds)
			}
			insp := res.Builds[0].Inspection
			if len(insp.Programs) == 0 || len(insp.Maps) == 0 {
				t.Fatalf("inspection without programs or maps: %+v", insp)
			}
			// The human output names every program and map.
			for _, p := range insp.Programs {
				if !strings.Contains(r.stdout, p.Name) || !strings.Contains(r.stdout, p.Section) {
					t.Errorf("output lacks program %s (%s):\n%s", p.Name, p.Section, r.stdout)
				}
			}
			for _, m := range insp.Maps {
				if !strings.Contains(r.stdout, m.Name) {
					t.Errorf("output lacks map %s:\n%s", m.Name, r.stdout)
				}
			}
			// The object is downloadable and is a BPF ELF.
			code, obj := f.api("GET", fmt.Sprintf("/api/v1/builds/%d/object", res.Builds[0].ID), f.admin, "", nil, nil)
			if code != 200 || !bytes.HasPrefix(obj, []byte("\x7fELF")) || int64(len(obj)) != res.Builds[0].Object.Size {
				t.Fatalf("object: %d, %d bytes", code, len(obj))
			}
		})
	}
	r := f.cli("programs", "list", "--json")
	var ps []api.Program
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ps) != nil || len(ps) != len(exampleDirs(t)) {
		t.Fatalf("programs list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = f.cli("programs", "show", ps[0].Name)
	if r.code != 0 || !strings.Contains(r.stdout, ps[0].Latest.Digest) {
		t.Fatalf("programs show: %d %s %s", r.code, r.stdout, r.stderr)
	}
}

// TestPushSyntaxError: exit 1, the diagnostic at the user's own
// file:line:col, first line saying what failed.
func TestPushSyntaxError(t *testing.T) {
	f := startFarm(t, "")
	dir := filepath.Join(repoRoot(t), "examples", "broken")
	src, err := os.ReadFile(filepath.Join(dir, "broken.bpf.c"))
	if err != nil {
		t.Fatal(err)
	}
	// The example documents its expected diagnostic location.
	var want string
	for _, line := range strings.Split(string(src), "\n") {
		if i := strings.Index(line, "expected diagnostic: "); i >= 0 {
			want = strings.TrimSpace(line[i+len("expected diagnostic: "):])
			if j := strings.Index(want, ": error"); j >= 0 {
				want = want[:j]
			}
		}
	}
	if want == "" {
		t.Fatal("examples/broken/broken.bpf.c documents no 'expected diagnostic: FILE:LINE:COL'")
	}
	r := f.cli("push", dir, "--wait")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	first, _, _ := strings.Cut(r.stderr, "\n")
	if !strings.HasPrefix(first, "bpfarm: build ") || !strings.Contains(first, "failed") {
		t.Errorf("first line %q does not say what failed", first)
	}
	if !strings.Contains(r.stderr, want+": error:") {
		t.Errorf("diagnostic %s: error: not in output:\n%s", want, r.stderr)
	}
	for _, leak := range []string{"/src/", "/farm/", f.data, os.TempDir() + "/"} {
		if strings.Contains(r.stderr+r.stdout, leak) {
			t.Errorf("output leaks sandbox/host path %q:\n%s", leak, r.stderr)
		}
	}
}

// TestUsageErrors: exit status 2 and one clear line.
func TestUsageErrors(t *testing.T) {
	f := &farm{t: t, url: "http://127.0.0.1:1"}
	for _, args := range [][]string{{"push"}, {"--bogus"}, {"programs", "show"}, {"tokens", "create"}, {"nonsense"}} {
		r := f.cliAs("", args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "bpfarm: ") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	// An unreachable server is an operation failure (1), not a usage error.
	r := f.cliAs("", "programs", "list")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "bpfarm: ") {
		t.Errorf("unreachable server: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestCacheHit: pushing the same sources twice compiles once, even under
// another program name.
func TestCacheHit(t *testing.T) {
	f := startFarm(t, "")
	dir := exampleDirs(t)[0]
	for i, name := range []string{"a", "a", "b"} {
		r := f.cli("push", dir, "--name", name, "--wait")
		if r.code != 0 {
			t.Fatalf("push %d: %d %s", i, r.code, r.stderr)
		}
	}
	var bs []api.Build
	f.api("GET", "/api/v1/builds", f.admin, "", nil, &bs)
	if len(bs) != 2 {
		t.Fatalf("want 2 builds (a, b), got %d", len(bs))
	}
	if bs[0].CachedFrom != bs[1].ID {
		t.Errorf("b's build is not a cache hit of a's: %+v", bs[0])
	}
	_, metrics := f.api("GET", "/metrics", "", "", nil, nil)
	if n := metricValue(string(metrics), `bpfarm_builds_total{result="succeeded"}`); n != 1 {
		t.Errorf("compiled %v times, want 1", n)
	}
	if n := metricValue(string(metrics), `bpfarm_build_cache_hits_total`); n != 2 {
		t.Errorf("cache hits %v, want 2", n)
	}
}

func metricValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, name+" "), &v)
			return v
		}
	}
	return -1
}

// tarGz builds a tarball from headers and contents.
func tarGz(t *testing.T, entries ...tarEntry) *bytes.Buffer {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(e.data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	gz.Close()
	return &buf
}

type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func file(name, data string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, data: []byte(data)}
}

const okProgram = `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
SEC("tp/syscalls/sys_enter_getpid") int count(void *ctx) { return 0; }
char LICENSE[] SEC("license") = "GPL";
`

// TestHostileInput: every attack is refused with a clear 4xx line or fails
// as a build, no byte of a host file leaks, and the server keeps serving.
func TestHostileInput(t *testing.T) {
	f := startFarm(t, "", "--compile-timeout", "10s")
	canary := "root:x:0:0"
	passwd, _ := os.ReadFile("/etc/passwd")
	if !bytes.Contains(passwd, []byte(canary)) {
		canary = strings.SplitN(string(passwd), "\n", 2)[0]
	}
	push := func(name string, body io.Reader, query string) (int, []byte, api.PushResult) {
		var res api.PushResult
		code, b := f.api("POST", "/api/v1/programs/"+name+"/revisions"+query, f.admin, "application/gzip", body, &res)
		return code, b, res
	}
	refused := []struct {
		name    string
		body    *bytes.Buffer
		query   string
		code    int
		message string
	}{
		{"symlink", tarGz(t, file("p.bpf.c", okProgram), tarEntry{hdr: tar.Header{Name: "x.h", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}), "", 400, "symbolic link"},
		{"hardlink", tarGz(t, file("p.bpf.c", okProgram), tarEntry{hdr: tar.Header{Name: "x.h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}), "", 400, "link"},
		{"device", tarGz(t, file("p.bpf.c", okProgram), tarEntry{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}), "", 400, "device"},
		{"dotdot", tarGz(t, file("p.bpf.c", okProgram), file("../../etc/x.h", "x")), "", 400, "escapes"},
		{"absolute", tarGz(t, file("p.bpf.c", okProgram), file("/etc/x.h", "x")), "", 400, "absolute"},
		{"oversize", tarGz(t, file("p.bpf.c", okProgram), file("big.h", strings.Repeat("x", 9<<20))), "", 400, "limit"},
		{"not-gzip", bytes.NewBufferString("hello"), "", 400, "gzip"},
	}
	for _, flag := range []string{"-Xclang", "-I/etc", "-fplugin=/tmp/x.so", "-load", "--config=/etc/passwd", "@/etc/passwd", "-include/etc/passwd", "-o/tmp/x"} {
		refused = append(refused, struct {
			name    string
			body    *bytes.Buffer
			query   string
			code    int
			message string
		}{"flag" + flag, tarGz(t, file("p.bpf.c", okProgram)), "?flag=" + urlEscape(flag), 400, "not allowed"})
	}
	for _, c := range refused {
		code, body, _ := push("hostile", c.body, c.query)
		var e api.Error
		json.Unmarshal(body, &e)
		if code != c.code && !(c.name == "oversize" && code == 413) {
			t.Errorf("%s: status %d, want %d: %s", c.name, code, c.code, body)
		}
		if e.Error == "" || strings.Contains(e.Error, "\n") || !strings.Contains(strings.ToLower(e.Error), c.message) {
			t.Errorf("%s: error %q should be one line mentioning %q", c.name, e.Error, c.message)
		}
	}

	// Sources that reach for host files fail to build, leaking nothing.
	failing := map[string]string{
		"include-passwd": "#include \"vmlinux.h\"\n#include \"/etc/passwd\"\n",
		"include-shadow": "#include \"vmlinux.h\"\n#include </etc/shadow>\n",
		"embed-passwd":   "#include \"vmlinux.h\"\nconst char x[] = {\n#embed \"/etc/passwd\"\n};\n",
		"include-parent": "#include \"vmlinux.h\"\n#include \"../../../../../../etc/passwd\"\n",
		"bomb": `#define A0 x x
#define A1 A0 A0 A0 A0 A0 A0 A0 A0
#define A2 A1 A1 A1 A1 A1 A1 A1 A1
#define A3 A2 A2 A2 A2 A2 A2 A2 A2
#define A4 A3 A3 A3 A3 A3 A3 A3 A3
#define A5 A4 A4 A4 A4 A4 A4 A4 A4
#define A6 A5 A5 A5 A5 A5 A5 A5 A5
#define A7 A6 A6 A6 A6 A6 A6 A6 A6
#define A8 A7 A7 A7 A7 A7 A7 A7 A7
#define A9 A8 A8 A8 A8 A8 A8 A8 A8
#define A10 A9 A9 A9 A9 A9 A9 A9 A9
int y = sizeof((char[]){A10 A10 A10 A10});
`,
	}
	for name, src := range failing {
		code, body, res := push(name, tarGz(t, file(name+".bpf.c", src)), "")
		if code/100 != 2 || len(res.Builds) != 1 {
			t.Errorf("%s: push %d %s", name, code, body)
			continue
		}
		b := f.waitBuild(res.Builds[0].ID)
		if b.State != api.StateFailed || b.ErrorKind != "user" || b.Error == "" {
			t.Errorf("%s: build %+v, want a user failure", name, b)
		}
		_, bj := f.api("GET", fmt.Sprintf("/api/v1/builds/%d", b.ID), f.admin, "", nil, nil)
		_, logText := f.api("GET", fmt.Sprintf("/api/v1/builds/%d/log", b.ID), f.admin, "", nil, nil)
		for _, blob := range [][]byte{bj, logText} {
			if bytes.Contains(blob, []byte(canary)) {
				t.Errorf("%s: host file content leaked: %s", name, blob)
			}
		}
		t.Logf("%s: %s", name, b.Error)
	}
	if code, _ := f.api("GET", "/healthz", "", "", nil, nil); code != 200 {
		t.Fatalf("server stopped serving: %d", code)
	}
	// And it still builds good programs.
	code, body, res := push("good", tarGz(t, file("p.bpf.c", okProgram)), "")
	if code != 201 {
		t.Fatalf("push good: %d %s", code, body)
	}
	if b := f.waitBuild(res.Builds[0].ID); b.State != api.StateSucceeded {
		t.Fatalf("good program after attacks: %+v", b)
	}
}

func urlEscape(s string) string {
	r := strings.NewReplacer("%", "%25", "+", "%2B", "&", "%26", "=", "%3D", "@", "%40", "/", "%2F", " ", "%20")
	return r.Replace(s)
}

// TestAuth: roles, bad tokens, revocation and anonymous reads.
func TestAuth(t *testing.T) {
	f := startFarm(t, "")
	mk := func(name, role string) string {
		r := f.cli("tokens", "create", "--role", role, "--name", name)
		if r.code != 0 {
			t.Fatalf("tokens create: %d %s", r.code, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	reader, publisher := mk("ci-reader", "reader"), mk("ci-pub", "publisher")
	body := func() io.Reader { return tarGz(t, file("p.bpf.c", okProgram)) }
	cases := []struct {
		method, path, token string
		body                func() io.Reader
		want                int
	}{
		{"GET", "/api/v1/programs", "", nil, 401},
		{"GET", "/api/v1/programs", "bpfarm_nope", nil, 401},
		{"GET", "/api/v1/programs", reader, nil, 200},
		{"POST", "/api/v1/programs/p/revisions", reader, body, 403},
		{"POST", "/api/v1/programs/p/revisions", "", body, 401},
		{"POST", "/api/v1/programs/p/revisions", publisher, body, 201},
		{"GET", "/api/v1/tokens", publisher, nil, 403},
		{"GET", "/api/v1/tokens", f.admin, nil, 200},
		{"GET", "/api/v1/signing-key", "", nil, 200},
		{"GET", "/api/v1/openapi.json", "", nil, 200},
	}
	for _, c := range cases {
		var rd io.Reader
		if c.body != nil {
			rd = c.body()
		}
		code, b := f.api(c.method, c.path, c.token, "application/gzip", rd, nil)
		if code != c.want {
			t.Errorf("%s %s with %q: %d, want %d: %s", c.method, c.path, c.token, code, c.want, b)
		}
		if code >= 400 {
			var e api.Error
			if json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Errorf("%s %s: error body %q is not {\"error\": ...}", c.method, c.path, b)
			}
		}
	}
	r := f.cli("tokens", "list", "--json")
	var ts []api.Token
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ts) != nil || len(ts) != 3 {
		t.Fatalf("tokens list: %d %s", r.code, r.stdout)
	}
	if strings.Contains(r.stdout, reader) {
		t.Fatal("tokens list shows a secret")
	}
	if r := f.cli("tokens", "revoke", "ci-reader"); r.code != 0 {
		t.Fatalf("revoke: %d %s", r.code, r.stderr)
	}
	if code, _ := f.api("GET", "/api/v1/programs", reader, "", nil, nil); code != 401 {
		t.Errorf("revoked token: %d, want 401", code)
	}
	if r := f.cliAs(reader, "programs", "list"); r.code != 1 || !strings.Contains(r.stderr, "revoked") {
		t.Errorf("CLI with revoked token: %d %q", r.code, r.stderr)
	}

	// --anonymous-read: reads without a token, never writes.
	anon := startFarm(t, "", "--anonymous-read")
	if code, _ := anon.api("GET", "/api/v1/programs", "", "", nil, nil); code != 200 {
		t.Errorf("anonymous read: %d", code)
	}
	if code, _ := anon.api("POST", "/api/v1/programs/p/revisions", "", "application/gzip", body(), nil); code != 401 {
		t.Errorf("anonymous push: %d, want 401", code)
	}
}

// TestCrashRecovery: kill -9 the server mid-build; after a restart the build
// completes and no row points at a missing blob.
func TestCrashRecovery(t *testing.T) {
	f := startFarm(t, "", "--workers", "1")
	// A program slow enough to compile that the kill lands mid-build.
	var src strings.Builder
	src.WriteString("#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n")
	for i := range 400 {
		fmt.Fprintf(&src, "SEC(\"tp/syscalls/sys_enter_getpid\") int p%d(void *ctx) { volatile int x = %d; return x * x; }\n", i, i)
	}
	src.WriteString("char LICENSE[] SEC(\"license\") = \"GPL\";\n")
	var res api.PushResult
	code, body := f.api("POST", "/api/v1/programs/slow/revisions", f.admin, "application/gzip", tarGz(t, file("slow.bpf.c", src.String())), &res)
	if code != 201 {
		t.Fatalf("push: %d %s", code, body)
	}
	id := res.Builds[0].ID
	deadline := time.Now().Add(time.Minute)
	for {
		var b api.Build
		f.api("GET", fmt.Sprintf("/api/v1/builds/%d", id), f.admin, "", nil, &b)
		if b.State == api.StateRunning {
			break
		}
		if b.Done() {
			t.Skipf("build finished before the kill could land (state %s); the machine is too fast for this program", b.State)
		}
		if time.Now().After(deadline) {
			t.Fatal("build never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.kill9()
	f.start()
	b := f.waitBuild(id)
	if b.State != api.StateSucceeded || b.Attempts != 2 {
		t.Fatalf("after restart: state %s attempts %d error %q", b.State, b.Attempts, b.Error)
	}
	f.stop()
	checkBlobRefs(t, f.data)
}

func checkBlobRefs(t *testing.T, data string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(data, "bpfarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	refs, err := db.BlobRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) < 3 {
		t.Fatalf("only %d blob refs", len(refs))
	}
	for _, r := range refs {
		if _, err := os.Stat(filepath.Join(data, "blobs", "sha256", r[:2], r)); err != nil {
			t.Errorf("row points at missing blob %s: %v", r, err)
		}
	}
}

// TestS3 runs the farm with every blob in a real MinIO bucket.
func TestS3(t *testing.T) {
	s3 := testenv.MinIO(t)
	f := startFarm(t, "", "--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket,
		"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-insecure")
	r := f.cli("push", exampleDirs(t)[0], "--wait", "--json")
	if r.code != 0 {
		t.Fatalf("push: %d %s", r.code, r.stderr)
	}
	var res api.PushResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	b := res.Builds[0]
	code, obj := f.api("GET", "/api/v1/blobs/"+b.Object.Digest, f.admin, "", nil, nil)
	if code != 200 || int64(len(obj)) != b.Object.Size {
		t.Fatalf("object from S3: %d, %d bytes", code, len(obj))
	}
	// Nothing went to the local blob directory.
	if ents, _ := os.ReadDir(filepath.Join(f.data, "blobs", "sha256")); len(ents) != 0 {
		t.Errorf("local blob directory used with S3 configured: %d entries", len(ents))
	}
}

// TestMultipartPush: the REST upload as multipart/form-data, with paths in
// the file names and options as form fields.
func TestMultipartPush(t *testing.T) {
	f := startFarm(t, "")
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for name, content := range map[string]string{
		"src/prog.bpf.c": "#include \"vmlinux.h\"\n#include \"inc/defs.h\"\n#include <bpf/bpf_helpers.h>\nSEC(\"tp/syscalls/sys_enter_getpid\") int p(void *ctx) { return VALUE; }\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n",
		"src/inc/defs.h": "#define VALUE 0\n",
	} {
		w, _ := mw.CreateFormFile("file", name)
		io.WriteString(w, content)
	}
	mw.WriteField("entry", "src/prog.bpf.c")
	mw.WriteField("flag", "-DBPFARM_TEST_EXTRA=1")
	mw.Close()
	var res api.PushResult
	code, b := f.api("POST", "/api/v1/programs/multi/revisions", f.admin, mw.FormDataContentType(), &body, &res)
	if code != 201 || len(res.Builds) != 1 {
		t.Fatalf("multipart push: %d %s", code, b)
	}
	if bd := f.waitBuild(res.Builds[0].ID); bd.State != api.StateSucceeded || !slices.Equal(bd.Flags, []string{"-DBPFARM_TEST_EXTRA=1"}) {
		t.Fatalf("build: %+v", bd)
	}
	// A path escaping the bundle is refused the same way as in a tarball.
	body.Reset()
	mw = multipart.NewWriter(&body)
	w, _ := mw.CreateFormFile("file", "../evil.bpf.c")
	io.WriteString(w, okProgram)
	mw.Close()
	if code, b := f.api("POST", "/api/v1/programs/multi/revisions", f.admin, mw.FormDataContentType(), &body, nil); code != 400 {
		t.Errorf("../ in a multipart file name: %d %s", code, b)
	}
}
