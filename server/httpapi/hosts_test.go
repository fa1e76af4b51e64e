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
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/store"
)

// hostsAPI is an API server over a fresh database, with a token per role.
type hostsAPI struct {
	t      *testing.T
	db     *store.DB
	srv    *httptest.Server
	reg    *prometheus.Registry
	api    *Server
	tokens map[string]string // role → secret
}

func newHostsAPI(t *testing.T, agentBTFUpload bool) *hostsAPI {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "bpfarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h := &hostsAPI{t: t, db: db, tokens: map[string]string{}}
	for _, role := range []string{api.RoleAdmin, api.RolePublisher, api.RoleReader} {
		secret, _ := auth.NewSecret()
		if _, err := db.CreateToken(context.Background(), role+"-tok", role, auth.Hash(secret)); err != nil {
			t.Fatal(err)
		}
		h.tokens[role] = secret
	}
	h.reg = prometheus.NewRegistry()
	s := New(Config{DB: db, Registry: h.reg, AgentBTFUpload: agentBTFUpload,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h.api = s
	h.srv = httptest.NewServer(s)
	t.Cleanup(h.srv.Close)
	return h
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
	h := newHostsAPI(t, false)
	reg := api.HostRegistration{Name: "web-1", HostID: "abc", Kernel: testKernel, Labels: map[string]string{"role": "web"},
		HasBTF: true, AgentVersion: "test"}
	var host api.Host
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/register", reg, &host); code != http.StatusCreated || host.Name != "web-1" {
		t.Fatalf("register: %d %+v", code, host)
	}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/register", reg, &host); code != http.StatusOK {
		t.Fatalf("register again: %d", code)
	}
	if code := h.do("", "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusUnauthorized {
		t.Fatalf("register without a token: %d", code)
	}
	for name, bad := range map[string]api.HostRegistration{
		"bad name":   {Name: "../x", Kernel: testKernel},
		"bad kernel": {Name: "h", Kernel: "linux"},
		"bad label":  {Name: "h", Kernel: testKernel, Labels: map[string]string{"a,b": "c"}},
		"bad value":  {Name: "h", Kernel: testKernel, Labels: map[string]string{"a": "b,c"}},
	} {
		if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/register", bad, nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d", name, code)
		}
	}

	rep := api.HostReport{Programs: []api.HostProgram{{Program: "p", Revision: "r", State: api.HostProgramRolledBack, Error: "verifier"}}}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusNoContent {
		t.Fatalf("report: %d", code)
	}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/nope/report", rep, nil); code != http.StatusNotFound {
		t.Fatalf("report of an unknown host: %d", code)
	}
	bad := api.HostReport{Programs: []api.HostProgram{{Program: "p", State: "exploded"}}}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/web-1/report", bad, nil); code != http.StatusBadRequest {
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
}

func TestAssignmentsAPI(t *testing.T) {
	h := newHostsAPI(t, false)
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
}

// TestDesiredLongPoll: a long poll with the current version returns when
// an assignment changes what the host should run; with a short wait and
// no change it returns the same state.
func TestDesiredLongPoll(t *testing.T) {
	h := newHostsAPI(t, false)
	ctx := context.Background()
	if _, err := h.db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "abcdef0123", Entry: "p.bpf.c", BundleBlob: "b"}); err != nil {
		t.Fatal(err)
	}
	reg := api.HostRegistration{Name: "web-1", Kernel: testKernel, Labels: map[string]string{"role": "web"}}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusCreated {
		t.Fatalf("register: %d", code)
	}
	if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/nope/desired", nil, nil); code != http.StatusNotFound {
		t.Fatalf("desired of an unknown host: %d", code)
	}
	var ds api.DesiredState
	if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1/desired", nil, &ds); code != http.StatusOK || len(ds.Programs) != 0 {
		t.Fatalf("desired: %d %+v", code, ds)
	}
	v0 := ds.Version
	var same api.DesiredState
	path := "/api/v1/hosts/web-1/desired?version=" + strconv.FormatUint(v0, 10)
	if code := h.do(api.RoleReader, "GET", path+"&wait=10ms", nil, &same); code != http.StatusOK || same.Version != v0 {
		t.Fatalf("unchanged: %d %+v", code, same)
	}
	type answer struct {
		code int
		ds   api.DesiredState
	}
	done := make(chan answer, 1)
	go func() {
		var a answer
		a.code = h.do(api.RoleReader, "GET", path+"&wait=2m", nil, &a.ds)
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
		a.code = h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1/desired?wait=2m&version="+strconv.FormatUint(got.ds.Version, 10), nil, &a.ds)
		done <- a
	}()
	for h.metric("bpfarm_desired_polls_waiting", "") < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	h.api.StopLongPolls()
	if got := <-done; got.code != http.StatusOK || len(got.ds.Programs) != 1 {
		t.Fatalf("poll at shutdown: %+v", got)
	}
	if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1/desired?version=x", nil, nil); code != http.StatusBadRequest {
		t.Fatalf("bad version: %d", code)
	}
}

// TestAgentBTFUpload: kernel imports need admin, unless the server lets
// agents upload their registered host's BTF.
func TestAgentBTFUpload(t *testing.T) {
	upload := func(h *hostsAPI, role, query string, multi bool) int {
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
		resp.Body.Close()
		return resp.StatusCode
	}
	off := newHostsAPI(t, false)
	if code := upload(off, api.RoleReader, "id="+testKernel, true); code != http.StatusForbidden {
		t.Fatalf("reader upload without --agent-btf-upload: %d", code)
	}
	on := newHostsAPI(t, true)
	if code := upload(on, api.RoleReader, "id="+testKernel, true); code != http.StatusForbidden {
		t.Fatalf("reader upload for an unregistered kernel: %d", code)
	}
	reg := api.HostRegistration{Name: "web-1", Kernel: testKernel}
	if code := on.do(api.RoleReader, "POST", "/api/v1/hosts/register", reg, nil); code != http.StatusCreated {
		t.Fatalf("register: %d", code)
	}
	if code := upload(on, api.RoleReader, "id="+testKernel, false); code != http.StatusForbidden {
		t.Fatalf("reader upload of a file: %d", code)
	}
	if code := upload(on, api.RoleReader, "id="+testKernel+"&replace=true", true); code != http.StatusForbidden {
		t.Fatalf("reader upload with replace: %d", code)
	}
	// Past the guard: the import itself refuses the empty upload.
	if code := upload(on, api.RoleReader, "id="+testKernel, true); code != http.StatusBadRequest {
		t.Fatalf("reader upload of a registered host's kernel: %d", code)
	}
}

// TestAssignmentExportsAPI: exports are checked (syntax, and the maps of
// the newest succeeded build), stored, and hosts report their status.
func TestAssignmentExportsAPI(t *testing.T) {
	h := newHostsAPI(t, false)
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
	job, err := h.db.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insp := &inspect.Object{Maps: []inspect.Map{{Name: "counts", Type: "Hash"}, {Name: "hist", Type: "Array"}}}
	if err := h.db.Finish(ctx, job.ID, store.Outcome{State: api.StateSucceeded, ObjectBlob: "o", Inspection: insp}); err != nil {
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
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/register", api.HostRegistration{Name: "web-1", Kernel: testKernel}, nil); code != http.StatusCreated {
		t.Fatalf("register: %d", code)
	}
	rep := api.HostReport{Programs: []api.HostProgram{{Program: "p", State: api.HostProgramLoaded, Since: time.Now(),
		Exports: []api.ExportStatus{{Map: "counts", Kind: api.ExportGauge, Metrics: []string{"bpfarm_p_counts"}},
			{Map: "hist", Kind: api.ExportHistogram, Error: "map hist: value type struct x has no slots[] array"}}}}}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/web-1/report", rep, nil); code != http.StatusNoContent {
		t.Fatalf("report: %d", code)
	}
	bad := rep
	bad.Programs = []api.HostProgram{{Program: "p", State: api.HostProgramLoaded, Exports: []api.ExportStatus{{Map: "../x"}}}}
	if code := h.do(api.RoleReader, "POST", "/api/v1/hosts/web-1/report", bad, nil); code != http.StatusBadRequest {
		t.Fatalf("report with a bad export: %d", code)
	}
	var host api.Host
	if code := h.do(api.RoleReader, "GET", "/api/v1/hosts/web-1", nil, &host); code != http.StatusOK || len(host.Programs) != 1 ||
		len(host.Programs[0].Exports) != 2 || !strings.Contains(host.Programs[0].Exports[1].Error, "no slots") {
		t.Fatalf("host: %d %+v", code, host)
	}
}
