package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/store"
)

// TestPages renders every page of a small seeded database.
func TestPages(t *testing.T) {
	e := newTestEnv(t, nil)
	s := Seed(t, e.db, e.blobs, e.key, SeedOptions{Kernels: 60, Programs: 4, Hosts: 6})
	c := e.client()
	c.signIn(t, e.token(t, "admin", api.RoleAdmin))
	a, err := e.db.Artifact(context.Background(), s.ArtifactID)
	if err != nil {
		t.Fatal(err)
	}
	// A verifier verdict, as the VM verification may add it to reports,
	// shows in the matrix.
	verified := strings.Replace(mustJSON(t, a.Report), `"relocations":`, `"verified":{"accepted":true,"instructions":77},"relocations":`, 1)
	if _, err := e.db.SQL().Exec(`UPDATE artifacts SET report = ? WHERE id = ?`, verified, s.ArtifactID); err != nil {
		t.Fatal(err)
	}
	// A kernel whose BTF a host uploaded is marked.
	if _, err := e.db.SQL().Exec(`UPDATE kernels SET trust = 'unverified', source_host = 'host-001' WHERE kid = ?`, s.Kernel); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/", []string{s.Program, "Kernels covered", "x86_64: succeeded"}},
		{"/?q=snoop", []string{s.Program}},
		{"/programs/" + s.Program, []string{"Kernel coverage", "ubuntu 22.04 · x86_64", `class="c s-poisoned"`, "unguarded",
			`class="c s-unsupported"`, "ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel",
			"Compare revisions", "✔ verified", "accepted (77 instructions)"}},
		{"/programs/" + s.Program + "?only=problems&rev=" + s.RevTo[:8], []string{"Only kernels with a problem"}},
		{"/programs/" + s.Program + "/diff?from=" + s.RevFrom + "&to=" + s.RevTo, []string{"modified", `class="l-ins"`, "const volatile int target_pid", "@@ -"}},
		{"/builds/" + itoa(s.BuildID), []string{"Diagnostics", "prog.bpf.c:42:7", "handle_sys_enter_execve", "RingBuf", "target_tgid", "Dual BSD/GPL", "struct event", "declared", "BPFARM_RECORD(events, struct event)"}},
		{"/artifacts/" + itoa(s.ArtifactID), []string{"Minimized BTF", "verifies with this server", a.Program + ".relocated.bpf.o", "&#34;signature&#34;"}},
		{"/kernels", []string{"Coverage by distro", "ubuntu", "btfhub archive"}},
		{kernelPath(s.Kernel), []string{"Programs relocated for it", s.Program, "host <strong>host-001</strong> uploaded this BTF",
			"bpfarm kernels approve " + s.Kernel}},
		{"/kernels?q=" + url.QueryEscape(s.Kernel), []string{`class="badge s-unverified"`, "unverified · host-001"}},
		{"/hosts", []string{"host-000", "env=prod", "agent v0.4.0", "bpf_prog_counts_total", "by pid, comm",
			"not exported: map events: a RingBuf map holds no values to export", "1 export failing", "<code>lat</code>:histogram"}},
		{"/upload", []string{`enctype="multipart/form-data"`, "x86_64"}},
	} {
		res := c.do(t, http.MethodGet, tc.path, nil)
		body := res.Body.String()
		if res.Code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", tc.path, res.Code, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q", tc.path, w)
			}
		}
	}
	// A verification on the booted kernel shows in the matrix and on the
	// artifact page.
	{
		rejected := a
		as, err := e.db.Artifacts(context.Background(), store.ArtifactFilter{BuildID: a.BuildID, Limit: 2})
		if err != nil || len(as) < 2 {
			t.Fatal(err)
		}
		rejected = as[0]
		if rejected.ID == a.ID {
			rejected = as[1]
		}
		name := rejected.Report.Programs[0].Name
		if _, err := e.db.SQL().Exec(`INSERT INTO verifications (artifact_id, state, result, programs, created_at)
			VALUES (?, 'done', 'rejected', ?, ?)`, rejected.ID,
			`[{"program":"`+name+`","mode":"relocated","accepted":false,"error":"R1 invalid mem access 'scalar'","load_ms":1}]`,
			time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		body := c.do(t, http.MethodGet, "/programs/"+s.Program, nil).Body.String()
		if !strings.Contains(body, "✗ verifier") || !strings.Contains(body, "relocated: R1 invalid mem access") {
			t.Error("matrix: no rejected verification")
		}
		body = c.do(t, http.MethodGet, "/artifacts/"+itoa(rejected.ID), nil).Body.String()
		if !strings.Contains(body, "Verification on the real kernel") || !strings.Contains(body, "R1 invalid mem access") {
			t.Error("artifact page: no verification")
		}
	}
	// Downloads stream the blob under the session, named, with its digest.
	for role, f := range map[string]string{"relocated": manifest.FileRelocated, "min_btf": manifest.FileMinBTF} {
		res := c.do(t, http.MethodGet, "/artifacts/"+itoa(s.ArtifactID)+"/files/"+role, nil)
		if res.Code != http.StatusOK || !strings.HasPrefix(res.Header().Get("Content-Disposition"), "attachment; filename=") {
			t.Fatalf("download %s: %d %v", f, res.Code, res.Header())
		}
		if res.Header().Get("X-Content-Sha256") == "" || res.Body.Len() == 0 {
			t.Fatalf("download %s: %v", f, res.Header())
		}
	}
	if res := c.do(t, http.MethodGet, "/artifacts/"+itoa(s.ArtifactID)+"/files/manifest", nil); res.Code != http.StatusOK {
		t.Fatalf("manifest download: %d", res.Code)
	}
	// The live stream of a finished build ends at once with "final".
	if res := c.do(t, http.MethodGet, "/builds/"+itoa(s.BuildID)+"/events", nil); res.Code != http.StatusOK ||
		res.Header().Get("Content-Type") != "text/event-stream" || !strings.Contains(res.Body.String(), "event: final") ||
		!strings.Contains(res.Body.String(), `"state":"succeeded"`) {
		t.Fatalf("build events: %d %q", res.Code, res.Body.String())
	}
	for _, p := range []string{"/programs/nope", "/builds/999999", "/artifacts/abc", "/kernels/x/y/z/w", "/nothing"} {
		if res := c.do(t, http.MethodGet, p, nil); res.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, res.Code)
		}
	}
	// The static files carry a version for long caching.
	if res := c.do(t, http.MethodGet, "/static/style.css?v="+e.ui.static["style.css"].etag, nil); res.Code != http.StatusOK ||
		!strings.Contains(res.Header().Get("Cache-Control"), "immutable") {
		t.Errorf("static: %d %v", res.Code, res.Header())
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestEscaping puts hostile text everywhere users or kernels can put it
// (program names bypassing validation, diagnostics, errors, reports,
// kernel sources, host names and labels) and checks that every page
// escapes it.
func TestEscaping(t *testing.T) {
	e := newTestEnv(t, nil)
	s := Seed(t, e.db, e.blobs, e.key, SeedOptions{Kernels: 10, Programs: 2, Hosts: 2})
	const evil = `<script>alert(1)</script><img src=x onerror=alert(2)>"'`
	db := e.db.SQL()
	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE programs SET name = ? WHERE name = ?`, "x"+evil, s.Program)
	diags, _ := json.Marshal([]bpfsrc.Diagnostic{{File: evil + ".c", Line: 1, Column: 2, Severity: "error", Message: evil}})
	exec(`UPDATE builds SET diagnostics = ?, error = ?, state = 'failed', error_kind = 'user' WHERE id = ?`, string(diags), evil, s.BuildID)
	rep, _ := json.Marshal(manifest.Report{Kernel: evil, Programs: []manifest.ProgramReport{{Name: evil, Status: "poisoned",
		Error: evil, Poisoned: []manifest.Poison{{Kind: evil, Path: evil}}, Targets: []manifest.Target{{Kind: evil, Name: evil, Status: "missing"}}}}})
	exec(`UPDATE artifacts SET report = ?, error = ? WHERE build_id IN (SELECT id FROM builds WHERE id != ?)`, string(rep), evil, s.BuildID)
	exec(`UPDATE kernels SET source = ?, build = ?`, evil, evil)
	exec(`UPDATE hosts SET hostname = ?, labels = ?, agent_version = ?`, evil, `{"k":"`+strings.ReplaceAll(evil, `"`, `\"`)+`"}`, evil)

	c := e.client()
	c.signIn(t, e.token(t, "admin", api.RoleAdmin))
	name := "x" + evil
	for _, p := range []string{"/", "/?q=" + url.QueryEscape(evil), "/programs/" + url.PathEscape(name), "/builds/" + itoa(s.BuildID),
		"/kernels", "/kernels?q=" + url.QueryEscape(evil), kernelPath(s.Kernel), "/hosts", "/programs/" + url.PathEscape(evil),
		"/signin?next=" + url.QueryEscape(evil)} {
		res := c.do(t, http.MethodGet, p, nil)
		body := res.Body.String()
		if res.Code >= 500 {
			t.Errorf("GET %s: %d", p, res.Code)
		}
		for _, bad := range []string{"<script>alert", "<img src=x", "onerror=alert(2)>"} {
			if strings.Contains(body, bad) {
				i := strings.Index(body, bad)
				t.Errorf("GET %s: unescaped %q near %q", p, bad, body[max(0, i-80):min(len(body), i+80)])
			}
		}
	}
	// The hostile name still shows, escaped.
	if body := c.do(t, http.MethodGet, "/", nil).Body.String(); !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("escaped program name not shown")
	}
	// Download names cannot break out of the header.
	if got := safeFilename("a\"b/c\r\nd"); strings.ContainsAny(got, "\"/\r\n") {
		t.Errorf("safeFilename: %q", got)
	}
	// Every page sends a strict content security policy.
	res := c.do(t, http.MethodGet, "/", nil)
	if csp := res.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP: %q", csp)
	}
}
