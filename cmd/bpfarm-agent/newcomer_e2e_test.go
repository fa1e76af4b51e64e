package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/internal/testenv"
)

// TestNewcomer runs the README's first steps as a newcomer types them, with
// the real binaries: `bpfarm serve` with its defaults (as `make run` starts
// it, in a fresh directory: ./data), then `bpfarm push examples/execsnoop`,
// then `bpfarm-agent load execsnoop` — no token given, no kernel imported
// by hand. The server imports this host's kernel on its first start, the
// CLI and the agent read ./data/admin.token, and the program loads.
func TestNewcomer(t *testing.T) {
	root(t)
	for _, tool := range []string{"clang-19", "bwrap", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	work := t.TempDir()
	if err := os.CopyFS(filepath.Join(work, "examples", "execsnoop"), os.DirFS("../../examples/execsnoop")); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	server := "http://" + addr
	var log bytes.Buffer
	srv := exec.Command(bin.farm, "serve", "--addr", addr)
	srv.Dir = work
	srv.Stdout, srv.Stderr = &log, &log
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
		srv.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if resp, err := http.Get(server + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "imported this host's kernel") {
		t.Errorf("the server did not say it imported the host's kernel:\n%s", log.String())
	}

	// The default server is 127.0.0.1:8080; the test's is elsewhere. No
	// token: both commands read ./data/admin.token.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "BPFARM_SERVER=" + server}
	cmd := func(name string, args ...string) result {
		t.Helper()
		c := exec.Command(name, args...)
		c.Dir, c.Env = work, env
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		err := c.Run()
		r := result{stdout: out.String(), stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// --wait is push's default on a terminal.
	if r := cmd(bin.farm, "push", "examples/execsnoop", "--wait"); r.code != 0 {
		t.Fatalf("bpfarm push examples/execsnoop: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	d := newAgentDirs(t)
	r := cmd(bin.agent, append([]string{"load", "execsnoop"}, d.flags()...)...)
	if r.code != 0 {
		t.Fatalf("bpfarm-agent load execsnoop: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("bpfarm-agent load execsnoop:\n%s", r.stdout)
	l := status(t, append(env, "BPFARM_TOKEN=unused"), d, "execsnoop")
	if l == nil || len(l.Programs) == 0 {
		t.Fatalf("status: %+v", l)
	}
	for _, p := range l.Programs {
		if !p.Attached {
			t.Errorf("program %s not attached", p.Name)
		}
	}
	if r := cmd(bin.agent, append([]string{"unload", "execsnoop"}, d.flags()...)...); r.code != 0 {
		t.Errorf("unload: %d %s", r.code, r.stderr)
	}
}
