package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/manifest"
)

// TestUnsupportedRingbuf: a kernel whose BTF has no BPF_MAP_TYPE_RINGBUF
// (the host's BTF without that enumerator, like a pre-5.8 kernel) gets
// execsnoop's artifact with status unsupported and the reason "map events:
// ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel", in the API,
// `bpfarm programs show`, `bpfarm artifact get` (and its signed manifest),
// and the UI's matrix; the agent refuses to load it with that line unless
// --force. The host's own artifact stays ok.
func TestUnsupportedRingbuf(t *testing.T) {
	root(t)
	hostBTF, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		testenv.Require(t, "kernel BTF", err.Error())
	}
	old, err := testenv.OldKernelBTF(hostBTF, []string{"BPF_MAP_TYPE_RINGBUF"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldFile := filepath.Join(t.TempDir(), "old.btf")
	if err := os.WriteFile(oldFile, old, 0o644); err != nil {
		t.Fatal(err)
	}
	const oldID = "debian/10/x86_64/4.19.0-27-amd64"
	const reason = "map events: ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel"

	f := startFarm(t, "--anonymous-read")
	if r := f.cli("kernels", "import", "--host"); r.code != 0 && !strings.Contains(r.stderr+r.stdout, "unchanged") {
		t.Fatalf("import host: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := f.cli("kernels", "import", oldFile, "--id", oldID); r.code != 0 {
		t.Fatalf("import the old kernel: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := f.cli("push", "../../examples/execsnoop", "--wait"); r.code != 0 {
		t.Fatalf("push: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// The API.
	var arts []api.Artifact
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		arts = nil
		getJSON(t, f, "/api/v1/artifacts?program=execsnoop", &arts)
		done := 0
		for _, a := range arts {
			if a.State == api.ArtifactDone {
				done++
			}
		}
		if len(arts) >= 2 && done == len(arts) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("artifacts: %+v", arts)
		}
	}
	var oldArt *api.Artifact
	for i, a := range arts {
		if a.Kernel == oldID {
			oldArt = &arts[i]
		} else if a.Status != manifest.StatusOK {
			t.Errorf("artifact for %s: %s, want ok", a.Kernel, a.Status)
		}
	}
	if oldArt == nil || oldArt.Status != manifest.StatusUnsupported || oldArt.Report == nil || len(oldArt.Report.Programs) == 0 {
		t.Fatalf("old kernel's artifact: %+v", oldArt)
	}
	for _, p := range oldArt.Report.Programs {
		if p.Status != manifest.StatusUnsupported || p.Reason != reason {
			t.Errorf("API: %s: %s %q, want unsupported %q", p.Name, p.Status, p.Reason, reason)
		}
		found := false
		for _, n := range p.Needs {
			found = found || (n.Kind == "map_type" && n.Name == "BPF_MAP_TYPE_RINGBUF" && n.Map == "events" && n.Status == "missing")
		}
		if !found {
			t.Errorf("API: %s: needs %+v", p.Name, p.Needs)
		}
	}
	prog := oldArt.Report.Programs[0].Name

	// programs show.
	r := f.cli("programs", "show", "execsnoop")
	if r.code != 0 || !strings.Contains(r.stdout, oldID) || !strings.Contains(r.stdout, "unsupported") || !strings.Contains(r.stdout, reason) {
		t.Errorf("programs show: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = f.cli("programs", "show", "execsnoop", "--json")
	var shown struct {
		Artifacts []api.Artifact `json:"artifacts"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || len(shown.Artifacts) != len(arts) {
		t.Errorf("programs show --json: %v %s", err, r.stdout)
	}

	// artifact get, and its signed manifest.
	dir := t.TempDir()
	r = f.cli("artifact", "get", "execsnoop", "--kernel", oldID, "-o", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "unsupported") || !strings.Contains(r.stdout, reason) {
		t.Errorf("artifact get: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var m manifest.Manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("manifest: %v %s", err, b)
	}
	if m.Status != manifest.StatusUnsupported || m.Signature == nil || len(m.Report.Programs) == 0 {
		t.Fatalf("manifest: %+v", m)
	}
	for _, p := range m.Report.Programs {
		if p.Status != manifest.StatusUnsupported || p.Reason != reason {
			t.Errorf("manifest: %s: %s %q", p.Name, p.Status, p.Reason)
		}
	}

	// The UI's matrix: an unsupported cell whose details name the reason.
	resp, err := http.Get(f.url + "/programs/execsnoop")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(page)
	if !strings.Contains(html, `class="c s-unsupported"`) || !strings.Contains(html, reason) {
		t.Errorf("UI: no unsupported cell with the reason (%d):\n%.2000s", resp.StatusCode, html)
	}

	// The agent refuses it, with the reason, unless --force.
	env := agentEnv(t, f.url, readerToken(t, f))
	d := newAgentDirs(t)
	r = run(t, env, bin.agent, append([]string{"load", "execsnoop", "--kernel", oldID, "--no-attach"}, d.flags()...)...)
	// The first line after the notice that the key was pinned (first use).
	first := ""
	for l := range strings.SplitSeq(r.stderr, "\n") {
		if !strings.HasPrefix(l, "bpfarm-agent: pinned the server's signing key") {
			first = l
			break
		}
	}
	if r.code != 1 || !strings.Contains(first, "program "+prog+" is unsupported on "+oldID+": "+reason) ||
		!strings.Contains(first, "--force") {
		t.Errorf("agent load of an unsupported artifact: exit %d, first line %q\n%s", r.code, first, r.stdout)
	}
	if l := status(t, env, d, "execsnoop"); l != nil {
		t.Errorf("refused, yet loaded: %+v", l)
	}
	r = run(t, env, bin.agent, append([]string{"load", "execsnoop", "--kernel", oldID, "--no-attach", "--force"}, d.flags()...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("agent load --force: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, env, bin.agent, append([]string{"unload", "execsnoop"}, d.flags()...)...); r.code != 0 {
		t.Errorf("unload: %s", r.stderr)
	}
}

// getJSON GETs an API path as admin.
func getJSON(t *testing.T, f *farm, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+f.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
