package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

// hostsAPI is an API server over a fresh database, with a token per role.
type hostsAPI struct {
	t      *testing.T
	db     *store.DB
	srv    *httptest.Server
	reg    *prometheus.Registry
	api    *Server
	tokens map[string]string // role → secret
	blobs  blob.Store
}

// eachBackend runs fn as a subtest on each database the store speaks.
func eachBackend(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range storetest.Backends {
		t.Run(b, func(t *testing.T) { fn(t, b) })
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}

func newHostsAPI(t *testing.T, backend string, agentBTFUpload bool) *hostsAPI {
	t.Helper()
	db := storetest.Open(t, backend)
	h := &hostsAPI{t: t, db: db, tokens: map[string]string{}}
	for _, role := range []string{api.RoleAdmin, api.RolePublisher, api.RoleReader} {
		secret, _ := auth.NewSecret()
		if _, err := db.CreateToken(context.Background(), role+"-tok", role, auth.Hash(secret)); err != nil {
			t.Fatal(err)
		}
		h.tokens[role] = secret
	}
	h.reg = prometheus.NewRegistry()
	bs, err := blob.NewLocal(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	h.blobs = bs
	s := New(Config{DB: db, Blobs: bs, Registry: h.reg, AgentBTFUpload: agentBTFUpload,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h.api = s
	h.srv = httptest.NewServer(s)
	t.Cleanup(h.srv.Close)
	return h
}

// enroll enrolls host name through the API and keeps its token as
// tokens["host:"+name].
func (h *hostsAPI) enroll(name string, labels map[string]string) api.TokenCreated {
	h.t.Helper()
	var tok api.TokenCreated
	if code := h.do(api.RoleAdmin, "POST", "/api/v1/hosts/"+name+"/enroll", api.HostEnrollment{Labels: labels}, &tok); code != http.StatusCreated ||
		tok.Role != api.RoleHost || tok.Host != name || tok.Secret == "" {
		h.t.Fatalf("enroll %s: %d %+v", name, code, tok)
	}
	h.tokens["host:"+name] = tok.Secret
	return tok
}

// do sends a request as role and decodes a JSON answer into out (if not
// nil); it returns the status code.
func (h *hostsAPI) do(role, method, path string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, rd)
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+h.tokens[role])
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	if resp.StatusCode/100 != 2 && !json.Valid(b) {
		h.t.Errorf("%s %s: %d answer is not JSON: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// metric returns the value of a gauge or counter (of the series whose
// label has value label, when not empty).
func (h *hostsAPI) metric(name, label string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

const testKernel = "debian/12/x86_64/6.1.0-1-amd64"

func TestHostRegistrationAndReport(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		h := newHostsAPI(t, backend, false)
		h.enroll("web-1", nil)
		const web1 = "host:web-1"
		reg := api.HostRegistration{Name: "web-1", HostID: "abc", Kernel: testKernel, Labels: map[string]string{"role": "web"},
			HasBTF: true, AgentVersion: "test"}
		var host api.Host
		// Reader, publisher and admin tokens may not register a host.
		for _, role := range []string{api.RoleReader, api.RolePublisher, api.RoleAdmin} {
			if code := h.do(role, "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusForbidden {
				t.Fatalf("register as %s: %d", role, code)
			}
		}
		if code := h.do(web1, "POST", "/api/v1/hosts/register", reg, &host); code != http.StatusCreated || host.Name != "web-1" ||
			!strings.HasPrefix(host.Token, "host-web-1-") || host.Enrolled != host.Token {
			t.Fatalf("register: %d %+v", code, host)
		}
		if code := h.do(web1, "POST", "/api/v1/hosts/register", reg, &host); code != http.StatusOK {
			t.Fatalf("register again: %d", code)
		}
		if code := h.do("", "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusUnauthorized {
			t.Fatalf("register without a token: %d", code)
		}
		for name, bad := range map[string]api.HostRegistration{
			"bad name":   {Name: "../x", Kernel: testKernel},
			"bad kernel": {Name: "web-1", Kernel: "linux"},
			"bad label":  {Name: "web-1", Kernel: testKernel, Labels: map[string]string{"a,b": "c"}},
			"bad value":  {Name: "web-1", Kernel: testKernel, Labels: map[string]string{"a": "b,c"}},
		} {
			if code := h.do(web1, "POST", "/api/v1/hosts/register", bad, nil); code != http.StatusBadRequest {
				t.Errorf("%s: %d", name, code)
			}
		}

		rep := api.HostReport{Programs: []api.HostProgram{{Program: "p", Revision: "r", State: api.HostProgramRolledBack, Error: "verifier"}}}
		if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusForbidden {
			t.Fatalf("report as a reader: %d", code)
		}
		if code := h.do(web1, "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusNoContent {
			t.Fatalf("report: %d", code)
		}
		h.enroll("nope", nil)
		if code := h.do("host:nope", "POST", "/api/v1/hosts/nope/report", rep, nil); code != http.StatusNotFound {
			t.Fatalf("report of an unregistered host: %d", code)
		}
		bad := api.HostReport{Programs: []api.HostProgram{{Program: "p", State: "exploded"}}}
		if code := h.do(web1, "POST", "/api/v1/hosts/web-1/report", bad, nil); code != http.StatusBadRequest {
			t.Fatalf("bad state: %d", code)
		}
		if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1", nil, &host); code != http.StatusOK ||
			len(host.Programs) != 1 || host.Programs[0].State != api.HostProgramRolledBack || host.Programs[0].Error != "verifier" {
			t.Fatalf("show: %d %+v", code, host)
		}
		var hosts []api.Host
		if code := h.do(api.RoleReader, "GET", "/api/v1/hosts", nil, &hosts); code != http.StatusOK || len(hosts) != 1 {
			t.Fatalf("list: %d %+v", code, hosts)
		}
		if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/nope", nil, nil); code != http.StatusNotFound {
			t.Fatalf("unknown host: %d", code)
		}
	})
}

func TestAssignmentsAPI(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		h := newHostsAPI(t, backend, false)
		ctx := context.Background()
		if _, err := h.db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "abcdef0123", Entry: "p.bpf.c", BundleBlob: "b"}); err != nil {
			t.Fatal(err)
		}
		req := api.AssignmentRequest{Program: "p", Selector: map[string]string{"role": "web"}, Revision: "abcd",
			Options: api.LoadOptions{Attach: api.AttachOptions{Interface: "eth0"}}}
		if code := h.do(api.RoleReader, "POST", "/api/v1/assignments", req, nil); code != http.StatusForbidden {
			t.Fatalf("assign as reader: %d", code)
		}
		var a api.Assignment
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", req, &a); code != http.StatusCreated ||
			a.Revision != "abcdef0123" || a.Options.Attach.Interface != "eth0" {
			t.Fatalf("assign: %d %+v", code, a)
		}
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", api.AssignmentRequest{Program: "nope"}, nil); code != http.StatusNotFound {
			t.Fatalf("assign an unknown program: %d", code)
		}
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", api.AssignmentRequest{Program: "p", Revision: "ab"}, nil); code != http.StatusBadRequest {
			t.Fatalf("assign with a too short revision: %d", code)
		}
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments",
			api.AssignmentRequest{Program: "p", Selector: map[string]string{"": "x"}}, nil); code != http.StatusBadRequest {
			t.Fatalf("bad selector: %d", code)
		}
		var as []api.Assignment
		if code := h.do(api.RoleReader, "GET", "/api/v1/assignments?program=p", nil, &as); code != http.StatusOK || len(as) != 1 {
			t.Fatalf("list: %d %+v", code, as)
		}
		path := "/api/v1/assignments/" + strconv.FormatInt(a.ID, 10)
		if code := h.do(api.RoleReader, "DELETE", path, nil, nil); code != http.StatusForbidden {
			t.Fatalf("unassign as reader: %d", code)
		}
		if code := h.do(api.RolePublisher, "DELETE", path, nil, nil); code != http.StatusNoContent {
			t.Fatalf("unassign: %d", code)
		}
		if code := h.do(api.RolePublisher, "DELETE", path, nil, nil); code != http.StatusNotFound {
			t.Fatalf("unassign twice: %d", code)
		}
	})
}

// TestDesiredLongPoll: a long poll with the current version returns when
// an assignment changes what the host should run; with a short wait and
// no change it returns the same state.
func TestDesiredLongPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		h := newHostsAPI(t, backend, false)
		ctx := context.Background()
		if _, err := h.db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "abcdef0123", Entry: "p.bpf.c", BundleBlob: "b"}); err != nil {
			t.Fatal(err)
		}
		h.enroll("web-1", nil)
		reg := api.HostRegistration{Name: "web-1", Kernel: testKernel, Labels: map[string]string{"role": "web"}}
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusCreated {
			t.Fatalf("register: %d", code)
		}
		if code := h.do(api.RoleAdmin, "GET", "/api/v1/hosts/nope/desired", nil, nil); code != http.StatusNotFound {
			t.Fatalf("desired of an unknown host: %d", code)
		}
		if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1/desired", nil, nil); code != http.StatusForbidden {
			t.Fatalf("desired as a reader: %d", code)
		}
		var ds api.DesiredState
		if code := h.do("host:web-1", "GET", "/api/v1/hosts/web-1/desired", nil, &ds); code != http.StatusOK || len(ds.Programs) != 0 {
			t.Fatalf("desired: %d %+v", code, ds)
		}
		v0 := ds.Version
		var same api.DesiredState
		path := "/api/v1/hosts/web-1/desired?version=" + strconv.FormatUint(v0, 10)
		if code := h.do("host:web-1", "GET", path+"&wait=10ms", nil, &same); code != http.StatusOK || same.Version != v0 {
			t.Fatalf("unchanged: %d %+v", code, same)
		}
		type answer struct {
			code int
			ds   api.DesiredState
		}
		done := make(chan answer, 1)
		go func() {
			var a answer
			a.code = h.do("host:web-1", "GET", path+"&wait=2m", nil, &a.ds)
			done <- a
		}()
		// Wait until the poll waits, then change what the host should run.
		for h.metric("bpfarm_desired_polls_waiting", "") < 1 {
			time.Sleep(5 * time.Millisecond)
		}
		req := api.AssignmentRequest{Program: "p", Selector: map[string]string{"role": "web"}}
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", req, nil); code != http.StatusCreated {
			t.Fatalf("assign: %d", code)
		}
		got := <-done
		if got.code != http.StatusOK || got.ds.Version == v0 || len(got.ds.Programs) != 1 || got.ds.Programs[0].Program != "p" ||
			!strings.Contains(got.ds.Programs[0].Pending, "not in the archive") {
			t.Fatalf("long poll: %+v", got)
		}
		if n := h.metric("bpfarm_desired_polls_total", "changed"); n != 1 {
			t.Fatalf("polls woken by a change: %v", n)
		}
		// A server shutting down answers waiting polls at once.
		go func() {
			var a answer
			a.code = h.do("host:web-1", "GET", "/api/v1/hosts/web-1/desired?wait=2m&version="+strconv.FormatUint(got.ds.Version, 10), nil, &a.ds)
			done <- a
		}()
		for h.metric("bpfarm_desired_polls_waiting", "") < 1 {
			time.Sleep(5 * time.Millisecond)
		}
		h.api.StopLongPolls()
		if got := <-done; got.code != http.StatusOK || len(got.ds.Programs) != 1 {
			t.Fatalf("poll at shutdown: %+v", got)
		}
		if code := h.do("host:web-1", "GET", "/api/v1/hosts/web-1/desired?version=x", nil, nil); code != http.StatusBadRequest {
			t.Fatalf("bad version: %d", code)
		}
	})
}

// TestAgentBTFUpload: kernel imports need admin, unless the server lets
// hosts upload their own registered kernel's BTF with their host token.
// A reader uploading BTF is refused either way (the attack of issue 12).
func TestAgentBTFUpload(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		upload := func(h *hostsAPI, role, query string, multi bool) (int, string) {
			var buf bytes.Buffer
			ct := "application/octet-stream"
			if multi {
				mw := multipart.NewWriter(&buf)
				mw.WriteField("source", "host") // no btf part: refused after the guard
				mw.Close()
				ct = mw.FormDataContentType()
			} else {
				buf.WriteString("not a kernel")
			}
			req, _ := http.NewRequest("POST", h.srv.URL+"/api/v1/kernels?"+query, &buf)
			req.Header.Set("Authorization", "Bearer "+h.tokens[role])
			req.Header.Set("Content-Type", ct)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e api.Error
			json.NewDecoder(resp.Body).Decode(&e)
			if strings.Contains(e.Error, "\n") {
				t.Errorf("refusal is not one line: %q", e.Error)
			}
			return resp.StatusCode, e.Error
		}
		off := newHostsAPI(t, backend, false)
		off.enroll("web-1", nil)
		if code, _ := upload(off, api.RoleReader, "id="+testKernel, true); code != http.StatusForbidden {
			t.Fatalf("reader upload without --agent-btf-upload: %d", code)
		}
		if code, msg := upload(off, "host:web-1", "id="+testKernel, true); code != http.StatusForbidden ||
			!strings.Contains(msg, "--agent-btf-upload") {
			t.Fatalf("host upload without --agent-btf-upload: %d %s", code, msg)
		}
		on := newHostsAPI(t, backend, true)
		on.enroll("web-1", nil)
		on.enroll("web-2", nil)
		if code, _ := upload(on, "host:web-1", "id="+testKernel, true); code != http.StatusForbidden {
			t.Fatalf("upload by an unregistered host: %d", code)
		}
		reg := api.HostRegistration{Name: "web-1", Kernel: testKernel}
		if code := on.do("host:web-1", "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusCreated {
			t.Fatalf("register: %d", code)
		}
		// The attack: a reader uploads BTF for a registered host's kernel.
		if code, msg := upload(on, api.RoleReader, "id="+testKernel, true); code != http.StatusForbidden ||
			!strings.Contains(msg, "needs admin") {
			t.Fatalf("reader upload: %d %s", code, msg)
		}
		// Another host may not upload web-1's kernel (it runs none).
		if code, _ := upload(on, "host:web-2", "id="+testKernel, true); code != http.StatusForbidden {
			t.Fatalf("upload by another host: %d", code)
		}
		if code, msg := upload(on, "host:web-1", "id=debian/12/x86_64/6.1.0-2-amd64", true); code != http.StatusForbidden ||
			!strings.Contains(msg, "runs kernel "+testKernel) {
			t.Fatalf("upload of another kernel: %d %s", code, msg)
		}
		if code, _ := upload(on, "host:web-1", "id="+testKernel, false); code != http.StatusForbidden {
			t.Fatalf("host upload of a file: %d", code)
		}
		if code, _ := upload(on, "host:web-1", "id="+testKernel+"&replace=true", true); code != http.StatusForbidden {
			t.Fatalf("host upload with replace: %d", code)
		}
		// Past the guard: the import itself refuses the empty upload.
		if code, _ := upload(on, "host:web-1", "id="+testKernel, true); code != http.StatusBadRequest {
			t.Fatalf("host upload of its registered kernel: %d", code)
		}
		ks, _ := on.db.Kernels(context.Background(), "")
		if len(ks) != 0 {
			t.Fatalf("refused uploads left kernels: %+v", ks)
		}
	})
}

// TestAssignmentExportsAPI: exports are checked (syntax, and the maps of
// the newest succeeded build), stored, and hosts report their status.
func TestAssignmentExportsAPI(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		h := newHostsAPI(t, backend, false)
		ctx := context.Background()
		if _, err := h.db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "abcdef0123", Entry: "p.bpf.c", BundleBlob: "b"}); err != nil {
			t.Fatal(err)
		}
		// No build yet: nothing to check the map names against.
		req := api.AssignmentRequest{Program: "p", Exports: []api.Export{{Map: "anything"}}}
		var a api.Assignment
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", req, &a); code != http.StatusCreated || len(a.Exports) != 1 {
			t.Fatalf("assign before any build: %d %+v", code, a)
		}
		if _, _, err := h.db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: "abcdef0123", Arch: "x86_64", CacheKey: "k"}); err != nil {
			t.Fatal(err)
		}
		job, err := h.db.Claim(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		insp := &inspect.Object{Maps: []inspect.Map{{Name: "counts", Type: "Hash"}, {Name: "hist", Type: "Array"}}}
		if _, err := h.db.Finish(ctx, job.Lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: "o", Inspection: insp}); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []api.AssignmentRequest{
			{Program: "p", Exports: []api.Export{{Map: "nope"}}},                                 // no such map
			{Program: "p", Exports: []api.Export{{Map: "counts", Kind: "summary"}}},              // unknown kind
			{Program: "p", Exports: []api.Export{{Map: "counts"}, {Map: "counts"}}},              // twice
			{Program: "p", Exports: []api.Export{{Map: "1bad"}}},                                 // not a name
			{Program: "p", Revision: "abcd", Exports: []api.Export{{Map: "counts"}, {Map: "x"}}}, // pinned: checked too
		} {
			if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", bad, nil); code != http.StatusBadRequest {
				t.Errorf("assign with exports %v: %d, want 400", bad.Exports, code)
			}
		}
		want := []api.Export{{Map: "counts", Kind: api.ExportGauge}, {Map: "hist", Kind: api.ExportHistogram}}
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", api.AssignmentRequest{Program: "p", Exports: want}, &a); code != http.StatusCreated ||
			len(a.Exports) != 2 || a.Exports[1] != want[1] {
			t.Fatalf("assign with exports: %d %+v", code, a)
		}
		var as []api.Assignment
		if code := h.do(api.RoleReader, "GET", "/api/v1/assignments?program=p", nil, &as); code != http.StatusOK || len(as) != 2 ||
			as[1].Exports[0] != want[0] || as[0].Exports[0].Map != "anything" {
			t.Fatalf("list: %d %+v", code, as)
		}

		// Reports carry each export's status; nonsense is refused.
		h.enroll("web-1", nil)
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/register", api.HostRegistration{Name: "web-1", Kernel: testKernel}, nil); code != http.StatusCreated {
			t.Fatalf("register: %d", code)
		}
		rep := api.HostReport{Programs: []api.HostProgram{{Program: "p", State: api.HostProgramLoaded, Since: time.Now(),
			Exports: []api.ExportStatus{{Map: "counts", Kind: api.ExportGauge, Metrics: []string{"bpfarm_p_counts"}},
				{Map: "hist", Kind: api.ExportHistogram, Error: "map hist: value type struct x has no slots[] array"}}}}}
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusNoContent {
			t.Fatalf("report: %d", code)
		}
		bad := rep
		bad.Programs = []api.HostProgram{{Program: "p", State: api.HostProgramLoaded, Exports: []api.ExportStatus{{Map: "../x"}}}}
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/web-1/report", bad, nil); code != http.StatusBadRequest {
			t.Fatalf("report with a bad export: %d", code)
		}
		var host api.Host
		if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1", nil, &host); code != http.StatusOK || len(host.Programs) != 1 ||
			len(host.Programs[0].Exports) != 2 || !strings.Contains(host.Programs[0].Exports[1].Error, "no slots") {
			t.Fatalf("host: %d %+v", code, host)
		}
	})
}

// TestHostImpersonation is the attack of issue 12: a second host's token
// registers, reports and polls as another host. Each is refused with one
// line naming the token, changes nothing, and the server keeps serving.
func TestHostImpersonation(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		h := newHostsAPI(t, backend, false)
		h.enroll("web-1", map[string]string{"role": "web"})
		h.enroll("evil", nil)
		reg := api.HostRegistration{Name: "web-1", HostID: "m1", Kernel: testKernel, Labels: map[string]string{"role": "db"}}
		var host api.Host
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/register", reg, &host); code != http.StatusCreated {
			t.Fatalf("register: %d", code)
		}
		// Enrolled labels hold whatever the agent registers.
		if host.Labels["role"] != "web" {
			t.Fatalf("labels: %v, want the enrolled role=web", host.Labels)
		}
		rep := api.HostReport{Programs: []api.HostProgram{{Program: "p", Revision: "r1", State: api.HostProgramLoaded}}}
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusNoContent {
			t.Fatalf("report: %d", code)
		}

		forged := api.HostRegistration{Name: "web-1", HostID: "evil", Kernel: "debian/12/x86_64/6.1.0-9-amd64"}
		forgedRep := api.HostReport{Programs: []api.HostProgram{{Program: "p", Revision: "r0", State: api.HostProgramFailed}}}
		for what, try := range map[string]func() (int, string){
			"register": func() (int, string) { return h.raw("host:evil", "POST", "/api/v1/hosts/register", forged) },
			"report":   func() (int, string) { return h.raw("host:evil", "POST", "/api/v1/hosts/web-1/report", forgedRep) },
			"poll":     func() (int, string) { return h.raw("host:evil", "GET", "/api/v1/hosts/web-1/desired", nil) },
			"reader register": func() (int, string) {
				return h.raw(api.RoleReader, "POST", "/api/v1/hosts/register", forged)
			},
			"reader report": func() (int, string) {
				return h.raw(api.RoleReader, "POST", "/api/v1/hosts/web-1/report", forgedRep)
			},
		} {
			code, msg := try()
			if code != http.StatusForbidden || strings.Contains(msg, "\n") || !strings.Contains(msg, "web-1") {
				t.Errorf("%s as another host: %d %q", what, code, msg)
			}
		}
		if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1", nil, &host); code != http.StatusOK {
			t.Fatalf("server stopped serving: %d", code)
		}
		if host.HostID != "m1" || host.Kernel != testKernel || len(host.Programs) != 1 || host.Programs[0].Revision != "r1" {
			t.Fatalf("impersonation changed the host: %+v", host)
		}
		// Re-enrolling revokes the old token.
		old := h.tokens["host:web-1"]
		h.enroll("web-1", nil)
		h.tokens["old"] = old
		if code, msg := h.raw("old", "POST", "/api/v1/hosts/web-1/report", rep); code != http.StatusUnauthorized {
			t.Fatalf("report with a revoked host token: %d %s", code, msg)
		}
		if code := h.do("host:web-1", "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusNoContent {
			t.Fatalf("report with the new token: %d", code)
		}
		var who api.Whoami
		if code := h.do("host:web-1", "GET", "/api/v1/whoami", nil, &who); code != http.StatusOK || who.Role != api.RoleHost || who.Host != "web-1" {
			t.Fatalf("whoami as a host: %d %+v", code, who)
		}
		// Host tokens cannot be made with tokens create.
		if code, msg := h.raw(api.RoleAdmin, "POST", "/api/v1/tokens", api.TokenRequest{Name: "x", Role: api.RoleHost}); code != http.StatusBadRequest ||
			!strings.Contains(msg, "enroll") {
			t.Fatalf("tokens create --role host: %d %s", code, msg)
		}
	})
}

// raw sends a request as role and returns the status and error message.
func (h *hostsAPI) raw(role, method, path string, body any) (int, string) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+h.tokens[role])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

// TestUnverifiedKernelServedOnlyToItsHost: the artifacts of a kernel a
// host uploaded (and their files) go only to that host and admins until
// an admin approves the kernel.
func TestUnverifiedKernelServedOnlyToItsHost(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		h := newHostsAPI(t, backend, true)
		ctx := context.Background()
		h.enroll("web-1", nil)
		h.enroll("web-2", nil)
		if _, err := h.db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "abcdef0123", Entry: "p.bpf.c", BundleBlob: "b"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: "abcdef0123", Arch: "x86_64", CacheKey: "k"}); err != nil {
			t.Fatal(err)
		}
		job, err := h.db.Claim(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.db.Finish(ctx, job.Lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: "o"}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := h.db.PutKernel(ctx, store.Kernel{KID: testKernel, Distro: "debian", Version: "12", Arch: "x86_64",
			Release: "6.1.0-1-amd64", BTFBlob: "btf", BTFSize: 3, Trust: api.KernelUnverified, SourceHost: "web-1"}, false); err != nil {
			t.Fatal(err)
		}
		if _, err := h.db.QueueArtifacts(ctx, job.ID); err != nil {
			t.Fatal(err)
		}
		aj, err := h.db.ClaimArtifact(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3}, "")
		if err != nil {
			t.Fatal(err)
		}
		minBTF, err := blob.PutBytes(ctx, h.blobs, []byte("minimized BTF of an unverified kernel"))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.db.FinishArtifact(ctx, aj.Lease, store.ArtifactOutcome{Status: "ok", MinBTFBlob: minBTF.String(), MinBTFSize: 10,
			ManifestBlob: minBTF.String()}); err != nil {
			t.Fatal(err)
		}
		art := "/api/v1/artifacts/" + strconv.FormatInt(aj.ID, 10)
		for _, who := range []string{api.RoleReader, api.RolePublisher, "host:web-2"} {
			for _, path := range []string{art, art + "/manifest", "/api/v1/blobs/" + minBTF.String(),
				"/api/v1/programs/p/artifact?kernel=" + testKernel} {
				code, msg := h.raw(who, "GET", path, nil)
				if code != http.StatusForbidden || !strings.Contains(msg, "bpfarm kernels approve "+testKernel) {
					t.Errorf("%s GET %s: %d %q", who, path, code, msg)
				}
			}
			var as []api.Artifact
			if code := h.do(who, "GET", "/api/v1/artifacts?program=p", nil, &as); code != http.StatusOK || len(as) != 0 {
				t.Errorf("%s lists %d artifacts of an unverified kernel (%d)", who, len(as), code)
			}
		}
		for _, who := range []string{"host:web-1", api.RoleAdmin} {
			if code := h.do(who, "GET", art, nil, nil); code != http.StatusOK {
				t.Errorf("%s GET %s: %d", who, art, code)
			}
			if code := h.do(who, "GET", "/api/v1/blobs/"+minBTF.String(), nil, nil); code != http.StatusOK {
				t.Errorf("%s GET the minimized BTF: %d", who, code)
			}
		}
		// Its host's desired state may use it; another host's waits.
		for _, name := range []string{"web-1", "web-2"} {
			reg := api.HostRegistration{Name: name, Kernel: testKernel}
			if code := h.do("host:"+name, "POST", "/api/v1/hosts/register", reg, nil); code/100 != 2 {
				t.Fatalf("register %s: %d", name, code)
			}
		}
		if code := h.do(api.RolePublisher, "POST", "/api/v1/assignments", api.AssignmentRequest{Program: "p"}, nil); code != http.StatusCreated {
			t.Fatalf("assign: %d", code)
		}
		var ds api.DesiredState
		if code := h.do("host:web-1", "GET", "/api/v1/hosts/web-1/desired", nil, &ds); code != http.StatusOK ||
			len(ds.Programs) != 1 || ds.Programs[0].Revision != "abcdef0123" {
			t.Fatalf("desired of web-1: %d %+v", code, ds)
		}
		var ds2 api.DesiredState
		if code := h.do("host:web-2", "GET", "/api/v1/hosts/web-2/desired", nil, &ds2); code != http.StatusOK ||
			len(ds2.Programs) != 1 || ds2.Programs[0].Revision != "" || !strings.Contains(ds2.Programs[0].Pending, "unverified") {
			t.Fatalf("desired of web-2: %d %+v", code, ds2)
		}
		// Approval serves it to everyone.
		var k api.Kernel
		if code := h.do(api.RoleReader, "POST", "/api/v1/kernels/"+testKernel+"/approve", nil, nil); code != http.StatusForbidden {
			t.Fatalf("approve as reader: %d", code)
		}
		if code := h.do(api.RoleAdmin, "POST", "/api/v1/kernels/"+testKernel+"/approve", nil, &k); code != http.StatusOK ||
			k.Trust != api.KernelTrusted {
			t.Fatalf("approve: %d %+v", code, k)
		}
		if code := h.do(api.RoleReader, "GET", art, nil, nil); code != http.StatusOK {
			t.Fatalf("reader GET after approval: %d", code)
		}
		var ds3 api.DesiredState
		if code := h.do("host:web-2", "GET", "/api/v1/hosts/web-2/desired", nil, &ds3); code != http.StatusOK ||
			len(ds3.Programs) != 1 || ds3.Programs[0].Revision != "abcdef0123" {
			t.Fatalf("desired of web-2 after approval: %d %+v", code, ds3)
		}
	})
}
