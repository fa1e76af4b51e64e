package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
)

// TestHostsCLI: assign, assignments list, hosts list/show and unassign
// against a real server, with an agent's registration and report made
// through the API, and an agent's BTF upload with --agent-btf-upload.
func TestHostsCLI(t *testing.T) {
	f := startFarm(t, "", "--agent-btf-upload")
	if r := f.cli("push", filepath.Join(repoRoot(t), "examples", "schedcount"), "--wait"); r.code != 0 {
		t.Fatalf("push: %d %s", r.code, r.stderr)
	}
	r := f.cli("tokens", "create", "--role", "reader", "--name", "reader")
	if r.code != 0 {
		t.Fatalf("token: %d %s", r.code, r.stderr)
	}
	readerTok := strings.TrimSpace(r.stdout)
	r = f.cli("hosts", "enroll", "web-1", "--labels", "role=web,zone=a")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "bpfarm_") || !strings.Contains(r.stderr, "enrolled host web-1") {
		t.Fatalf("hosts enroll: %d %s %s", r.code, r.stdout, r.stderr)
	}
	agentTok := strings.TrimSpace(r.stdout)
	if r := f.cliAs(readerTok, "hosts", "enroll", "web-2"); r.code != 1 || !strings.Contains(r.stderr, "needs admin") {
		t.Fatalf("hosts enroll as reader: %d %s", r.code, r.stderr)
	}

	r = f.cli("assign", "schedcount", "--selector", "role=web,zone=a", "--programs", "count_openat", "--set", "targ_tgid=1",
		"--max-entries", "switches=64", "--interface", "lo", "--json")
	var a api.Assignment
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &a) != nil {
		t.Fatalf("assign: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if a.Selector["zone"] != "a" || a.Options.Programs[0] != "count_openat" || a.Options.Set["targ_tgid"] != "1" ||
		a.Options.MaxEntries["switches"] != 64 || a.Options.Attach.Interface != "lo" || a.Revision != "" {
		t.Fatalf("assignment: %+v", a)
	}
	if r := f.cliAs(readerTok, "assign", "schedcount"); r.code != 1 || !strings.Contains(r.stderr, "needs publisher") {
		t.Fatalf("assign as reader: %d %s", r.code, r.stderr)
	}
	if r := f.cli("assign", "nope"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("assign an unknown program: %d %s", r.code, r.stderr)
	}
	if r := f.cli("assign", "schedcount", "--selector", "role"); r.code != 2 {
		t.Fatalf("bad selector: %d %s", r.code, r.stderr)
	}
	// --export: checked against the program's maps; a bad one is a usage
	// error, an unknown map a refusal naming the maps.
	r = f.cli("assign", "schedcount", "--selector", "role=db", "--export", "switches", "--export", "openat_count:gauge", "--json")
	var ea api.Assignment
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ea) != nil || len(ea.Exports) != 2 ||
		ea.Exports[1] != (api.Export{Map: "openat_count", Kind: api.ExportGauge}) {
		t.Fatalf("assign --export: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := f.cli("assign", "schedcount", "--export", "switches:summary"); r.code != 2 || !strings.Contains(r.stderr, "want counter, gauge, histogram") {
		t.Fatalf("assign --export with a bad kind: %d %s", r.code, r.stderr)
	}
	if r := f.cli("assign", "schedcount", "--export", "nope"); r.code != 1 || !strings.Contains(r.stderr, "has no map nope") ||
		!strings.Contains(r.stderr, "openat_count") {
		t.Fatalf("assign --export of an unknown map: %d %s", r.code, r.stderr)
	}
	r = f.cli("assignments", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "switches,openat_count:gauge") {
		t.Fatalf("assignments list with exports: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := f.cli("unassign", strconv.FormatInt(ea.ID, 10)); r.code != 0 {
		t.Fatalf("unassign: %d %s", r.code, r.stderr)
	}
	r = f.cli("assignments", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "role=web,zone=a") || !strings.Contains(r.stdout, "interface=lo") {
		t.Fatalf("assignments list: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// An agent registers this host and reports.
	host, err := kernel.Host()
	if err != nil {
		t.Fatal(err)
	}
	reg := api.HostRegistration{Name: "web-1", Kernel: host.ID.String(), Labels: map[string]string{"role": "web", "zone": "a"},
		HasBTF: host.HasBTF, AgentVersion: "test"}
	body, _ := json.Marshal(reg)
	if code, b := f.api("POST", "/api/v1/hosts/register", readerTok, "application/json", bytes.NewReader(body), nil); code != 403 {
		t.Fatalf("register as a reader: %d %s", code, b)
	}
	if code, b := f.api("POST", "/api/v1/hosts/register", agentTok, "application/json", bytes.NewReader(body), nil); code != 201 {
		t.Fatalf("register: %d %s", code, b)
	}
	var ds api.DesiredState
	if code, b := f.api("GET", "/api/v1/hosts/web-1/desired", agentTok, "", nil, &ds); code != 200 || len(ds.Programs) != 1 ||
		!strings.Contains(ds.Programs[0].Pending, "not in the archive") {
		t.Fatalf("desired before the kernel: %d %s", code, b)
	}
	// --agent-btf-upload: the host's token may upload its kernel's BTF,
	// stored unverified with the host as its source; a reader's may not.
	if host.HasBTF {
		if r := f.cliAs(readerTok, "kernels", "import", "--host", "--no-modules"); r.code != 1 || !strings.Contains(r.stderr, "needs admin") {
			t.Fatalf("reader BTF upload: %d %s", r.code, r.stderr)
		}
		if r := f.cliAs(agentTok, "kernels", "import", "--host", "--no-modules"); r.code != 0 {
			t.Fatalf("agent BTF upload: %d %s", r.code, r.stderr)
		}
		r := f.cli("kernels", "list")
		if r.code != 0 || !strings.Contains(r.stdout, host.ID.String()+" (unverified: uploaded by host web-1)") {
			t.Fatalf("kernels list after a host's upload: %d %s", r.code, r.stdout)
		}
		if r := f.cli("kernels", "approve", host.ID.String()); r.code != 0 || !strings.Contains(r.stdout, "trusted") {
			t.Fatalf("kernels approve: %d %s %s", r.code, r.stdout, r.stderr)
		}
	}
	rep, _ := json.Marshal(api.HostReport{Programs: []api.HostProgram{{Program: "schedcount", Revision: strings.Repeat("a", 64),
		State: api.HostProgramRolledBack, Error: "load program count_openat: invalid mem access\nverifier log",
		Exports: []api.ExportStatus{{Map: "openat_count", Kind: api.ExportCounter, Metrics: []string{"bpfarm_schedcount_openat_count_total"},
			Labels: []string{"key"}}, {Map: "events", Error: "map events: a RingBuf map holds no values to export"}}}}})
	if code, b := f.api("POST", "/api/v1/hosts/web-1/report", agentTok, "application/json", bytes.NewReader(rep), nil); code != 204 {
		t.Fatalf("report: %d %s", code, b)
	}
	r = f.cli("hosts", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "web-1") || !strings.Contains(r.stdout, "1 rolled_back") ||
		!strings.Contains(r.stdout, "host-web-1-") {
		t.Fatalf("hosts list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	var hs []api.Host
	if r := f.cli("hosts", "list", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &hs) != nil || len(hs) != 1 {
		t.Fatalf("hosts list --json: %d %s", r.code, r.stdout)
	}
	r = f.cli("hosts", "show", "web-1")
	if r.code != 0 || !strings.Contains(r.stdout, "rolled_back") || !strings.Contains(r.stdout, "invalid mem access") ||
		strings.Contains(r.stdout, "verifier log") || !strings.Contains(r.stdout, "bpfarm_schedcount_openat_count_total {key}") ||
		!strings.Contains(r.stdout, "NOT EXPORTED: map events: a RingBuf map") {
		t.Fatalf("hosts show: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := f.cli("hosts", "show", "nope"); r.code != 1 {
		t.Fatalf("hosts show unknown: %d %s", r.code, r.stderr)
	}

	if r := f.cli("unassign", "x"); r.code != 2 {
		t.Fatalf("unassign x: %d %s", r.code, r.stderr)
	}
	if r := f.cli("unassign", "1"); r.code != 0 {
		t.Fatalf("unassign: %d %s", r.code, r.stderr)
	}
	if r := f.cli("unassign", "1"); r.code != 1 {
		t.Fatalf("unassign twice: %d %s", r.code, r.stderr)
	}
}
