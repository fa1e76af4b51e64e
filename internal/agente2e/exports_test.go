//go:build linux

package agente2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/client/agent"
)

// example returns the bundle of examples/NAME.
func example(t *testing.T, name string) *bpfsrc.Bundle {
	t.Helper()
	dir := filepath.Join("..", "..", "examples", name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []bpfsrc.File
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, bpfsrc.File{Name: e.Name(), Data: b})
	}
	b, err := bpfsrc.New(name+".bpf.c", files, bpfsrc.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scrape reads the agent's /metrics with the real text-format parser.
func scrape(t *testing.T, ag *agent.Agent) map[string]*dto.MetricFamily {
	t.Helper()
	var addr string
	for deadline := time.Now().Add(waitLimit); addr == ""; time.Sleep(20 * time.Millisecond) {
		if addr = ag.MetricsAddr(); addr == "" && time.Now().After(deadline) {
			t.Fatal("the agent does not serve /metrics")
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the agent's /metrics does not parse: %v", err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// series finds the series of family name whose labels include want.
func series(mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	mf := mfs[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.Metric {
		ls := labelsOf(m)
		for k, v := range want {
			if ls[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// TestDaemonExports: the daemon exports maps of real loaded programs on
// its /metrics — schedcount's counters (a scalar-keyed struct value, a
// gauge) and writesize's log2 histogram and struct-keyed counter — which
// expfmt parses; a map that cannot be exported (a ring buffer) is
// reported to the server; a swap of revision keeps the series (and, the
// maps being carried over, their values) while the info metric names the
// new revision.
func TestDaemonExports(t *testing.T) {
	requireDaemonEnv(t)
	f := startFarm(t)
	ctx := context.Background()
	rev1 := f.push("schedcount", schedcount(t, nil))
	wrev := f.push("writesize", example(t, "writesize"))
	pid := strconv.Itoa(os.Getpid())
	for _, req := range []api.AssignmentRequest{
		{Program: "schedcount", Exports: []api.Export{{Map: "switches"}, {Map: "openat_count", Kind: api.ExportGauge}}},
		{Program: "writesize", Options: api.LoadOptions{Set: map[string]string{"targ_tgid": pid}},
			Exports: []api.Export{{Map: "write_sizes"}, {Map: "writes"}, {Map: "big_writes"}}},
	} {
		if _, err := f.admin.Assign(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	cfg := agent.Config{
		Server: f.url, Token: f.hostToken("metrics-host"), Name: "metrics-host",
		StateDir: t.TempDir(), RunDir: t.TempDir(), PinDir: testPinDir(t), UploadBTF: true, MetricsAddr: "127.0.0.1:0",
		Poll: agent.PollConfig{Wait: 30 * time.Second, Heartbeat: time.Hour, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
	}
	ta := startAgent(t, cfg)

	// Both loaded, and the host reports every export: the ring buffer
	// with the reason it cannot be exported.
	h := f.waitHost("metrics-host", "both programs loaded with their exports", func(h *api.Host) bool {
		s, w := hostProgram(h, "schedcount"), hostProgram(h, "writesize")
		return s != nil && w != nil && s.State == api.HostProgramLoaded && w.State == api.HostProgramLoaded &&
			len(s.Exports) == 2 && len(w.Exports) == 3
	})
	for _, p := range h.Programs {
		for _, e := range p.Exports {
			bad := p.Program == "writesize" && e.Map == "big_writes"
			if bad != (e.Error != "") {
				t.Errorf("%s: export %+v", p.Program, e)
			}
			if bad && !strings.Contains(e.Error, "RingBuf map holds no values") {
				t.Errorf("big_writes: %q", e.Error)
			}
		}
	}
	ws := hostProgram(h, "writesize").Exports
	if ws[0].Kind != api.ExportHistogram || ws[0].Metrics[0] != "bpf_writesize_write_sizes" ||
		strings.Join(ws[1].Labels, ",") != "tgid,comm" || ws[1].Metrics[0] != "bpf_writesize_writes_total" {
		t.Errorf("writesize exports: %+v", ws)
	}

	// Writes of 1000 bytes from this process: log2 slot 9 (512-1023).
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	const writes = 50
	for range writes {
		if _, err := out.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	requireCounting(t, cfg)
	mfs := scrape(t, ta.a)

	hist := mfs["bpf_writesize_write_sizes"]
	if hist == nil || hist.GetType() != dto.MetricType_HISTOGRAM || len(hist.Metric) != 1 {
		t.Fatalf("write_sizes histogram: %v", hist)
	}
	hm := hist.Metric[0]
	if ls := labelsOf(hm); ls["host"] != "metrics-host" || ls["program"] != "writesize" || ls["key"] != "0" {
		t.Errorf("histogram labels: %v", ls)
	}
	var below512, upTo1023 uint64
	for _, b := range hm.GetHistogram().GetBucket() {
		switch b.GetUpperBound() {
		case 511:
			below512 = b.GetCumulativeCount()
		case 1023:
			upTo1023 = b.GetCumulativeCount()
		}
	}
	if upTo1023-below512 < writes || hm.GetHistogram().GetSampleCount() < writes {
		t.Errorf("histogram: bucket 512-1023 holds %d, count %d; want >= %d", upTo1023-below512,
			hm.GetHistogram().GetSampleCount(), writes)
	}
	w := series(mfs, "bpf_writesize_writes_total", map[string]string{"tgid": pid})
	if w == nil || w.GetCounter().GetValue() < writes || labelsOf(w)["comm"] == "" {
		t.Errorf("writes of this process: %v", w)
	}

	sw := mfs["bpf_schedcount_switches_switched_in_total"]
	if sw == nil || sw.GetType() != dto.MetricType_COUNTER || len(sw.Metric) == 0 || mfs["bpf_schedcount_switches_preempted_total"] == nil {
		t.Fatalf("switches: %v", sw)
	}
	openat := series(mfs, "bpf_schedcount_openat_count", map[string]string{"key": "0", "program": "schedcount"})
	if openat == nil || mfs["bpf_schedcount_openat_count"].GetType() != dto.MetricType_GAUGE || openat.GetGauge().GetValue() == 0 {
		t.Fatalf("openat_count gauge: %v", openat)
	}
	if info := series(mfs, "bpfarm_program_info", map[string]string{"program": "schedcount", "host": "metrics-host"}); info == nil ||
		labelsOf(info)["revision"] != rev1 {
		t.Fatalf("info metric: %v", info)
	}
	if info := series(mfs, "bpfarm_program_info", map[string]string{"program": "writesize"}); info == nil || labelsOf(info)["revision"] != wrev {
		t.Fatalf("writesize info metric: %v", info)
	}
	if series(mfs, "bpfarm_agent_operations_total", map[string]string{"op": "load", "result": "ok"}) == nil ||
		series(mfs, "bpfarm_agent_exports", map[string]string{"state": "error"}).GetGauge().GetValue() != 1 {
		t.Errorf("the agent's own metrics are missing")
	}
	before := openat.GetGauge().GetValue()

	// A new revision of schedcount: swapped; the series stay the same
	// (same names and labels: the revision is not among them) and go on
	// from their values (the loader carries compatible maps over); the
	// info metric names the new revision.
	rev2 := f.push("schedcount", schedcount(t, func(s string) string { return s + "\n/* revision 2 */\n" }))
	f.waitHost("metrics-host", "schedcount swapped to revision 2", func(h *api.Host) bool {
		p := hostProgram(h, "schedcount")
		return p != nil && p.State == api.HostProgramLoaded && p.Revision == rev2 && len(p.Exports) == 2
	})
	requireCounting(t, cfg)
	mfs = scrape(t, ta.a)
	after := series(mfs, "bpf_schedcount_openat_count", map[string]string{"key": "0", "program": "schedcount", "host": "metrics-host"})
	if after == nil || len(after.GetLabel()) != len(openat.GetLabel()) || after.GetGauge().GetValue() <= before {
		t.Fatalf("openat_count after the swap: %v (before: %v = %v)", after, openat, before)
	}
	if info := series(mfs, "bpfarm_program_info", map[string]string{"program": "schedcount"}); info == nil || labelsOf(info)["revision"] != rev2 {
		t.Fatalf("info metric after the swap: %v", info)
	}
	if n := len(mfs["bpfarm_program_info"].Metric); n != 2 {
		t.Errorf("%d info series, want 2 (one per program)", n)
	}
}
