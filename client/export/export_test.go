//go:build linux

package export

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

var (
	u32  = &btf.Int{Name: "u32", Size: 4}
	u64  = &btf.Int{Name: "u64", Size: 8}
	char = &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
)

// testMaps creates real maps with BTF, pinned in a bpffs directory, and
// returns them as a loaded set.
func testMaps(t *testing.T) (*loader.Loaded, map[string]*ebpf.Map) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Require(t, "root", "creating BPF maps needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "export-test-")
	if err != nil {
		testenv.Require(t, "bpffs", "pinning needs bpffs at /sys/fs/bpf: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// struct key { u32 pid; char comm[8]; }
	key := &btf.Struct{Name: "key", Size: 12, Members: []btf.Member{
		{Name: "pid", Type: u32},
		{Name: "comm", Type: &btf.Array{Index: u32, Type: char, Nelems: 8}, Offset: 32},
	}}
	// struct stats { u64 reads; u64 writes; }
	stats := &btf.Struct{Name: "stats", Size: 16, Members: []btf.Member{{Name: "reads", Type: u64}, {Name: "writes", Type: u64, Offset: 64}}}
	// struct hist { u32 slots[6]; }
	hist := &btf.Struct{Name: "hist", Size: 24, Members: []btf.Member{{Name: "slots", Type: &btf.Array{Index: u32, Type: u32, Nelems: 6}}}}
	specs := map[string]*ebpf.MapSpec{
		"calls":  {Type: ebpf.Hash, KeySize: 12, ValueSize: 8, MaxEntries: 16, Key: key, Value: u64},
		"io":     {Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: 16, Key: u32, Value: stats},
		"lat":    {Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: 2, Key: u32, Value: hist},
		"events": {Type: ebpf.RingBuf, MaxEntries: 4096},
		"nobtf":  {Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4},
		"opaque": {Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Key: u32, Value: &btf.Array{Index: u32, Type: char, Nelems: 8}},
	}
	l := &loader.Loaded{Name: "demo", Revision: "rev1"}
	maps := map[string]*ebpf.Map{}
	for name, spec := range specs {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatalf("map %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		pin := filepath.Join(dir, name)
		if err := m.Pin(pin); err != nil {
			t.Fatal(err)
		}
		maps[name] = m
		l.Maps = append(l.Maps, loader.MapState{Name: name, Type: spec.Type.String(), Pinned: pin})
	}

	put := func(m *ebpf.Map, k, v any) {
		t.Helper()
		if err := m.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	k := make([]byte, 12)
	binary.NativeEndian.PutUint32(k, 7)
	copy(k[4:], "sh")
	put(maps["calls"], k, uint64(3))
	binary.NativeEndian.PutUint32(k, 8)
	copy(k[4:], "a\"b\\\xff\x00")
	put(maps["calls"], k, uint64(1<<40))

	ncpu, _ := ebpf.PossibleCPU()
	per := make([][16]byte, ncpu)
	for c := range ncpu {
		binary.NativeEndian.PutUint64(per[c][:], 2)  // reads
		binary.NativeEndian.PutUint64(per[c][8:], 5) // writes
	}
	put(maps["io"], uint32(42), per)

	h := make([]byte, 24)
	for i, n := range []uint32{1, 0, 4, 2, 0, 0} {
		binary.NativeEndian.PutUint32(h[4*i:], n)
	}
	put(maps["lat"], uint32(1), h)
	return l, maps
}

func parse(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("expfmt cannot parse the exposition: %v\n%s", err, text)
	}
	return mfs
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func TestExporter(t *testing.T) {
	l, _ := testMaps(t)
	reg := prometheus.NewRegistry()
	e, err := New(Options{Host: "web-1", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := e.Update(l, []api.Export{{Map: "calls"}, {Map: "io", Kind: api.ExportGauge}, {Map: "lat"},
		{Map: "events"}, {Map: "nobtf"}, {Map: "missing"}, {Map: "opaque"}, {Map: "lat", Kind: api.ExportCounter}})
	wantErr := map[int]string{3: "RingBuf map holds no values", 4: "no BTF", 5: "not in the loaded set of demo", 6: "no numeric field",
		7: "is a log2 histogram: export it as histogram"}
	for i, s := range st {
		if w, bad := wantErr[i]; bad != (s.Error != "") || bad && !strings.Contains(s.Error, w) {
			t.Errorf("status %d (%s): %+v, want error %q", i, s.Map, s, w)
		}
	}
	if st[0].Kind != api.ExportCounter || strings.Join(st[0].Labels, ",") != "pid,comm" ||
		st[0].Metrics[0] != "bpf_demo_calls_total" {
		t.Errorf("calls: %+v", st[0])
	}
	if strings.Join(st[1].Metrics, ",") != "bpf_demo_io_reads,bpf_demo_io_writes" || st[1].Labels[0] != "key" {
		t.Errorf("io: %+v", st[1])
	}
	if st[2].Kind != api.ExportHistogram || st[2].Metrics[0] != "bpf_demo_lat" {
		t.Errorf("lat: %+v", st[2])
	}

	var buf bytes.Buffer
	if err := e.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	mfs := parse(t, buf.Bytes())

	info := mfs[InfoMetric]
	if info == nil || len(info.Metric) != 1 || labels(info.Metric[0])["revision"] != "rev1" {
		t.Fatalf("info metric: %v", info)
	}
	calls := mfs["bpf_demo_calls_total"]
	if calls == nil || calls.GetType() != dto.MetricType_COUNTER || len(calls.Metric) != 2 {
		t.Fatalf("calls: %v\n%s", calls, buf.String())
	}
	got := map[string]float64{}
	for _, m := range calls.Metric {
		ls := labels(m)
		if ls["host"] != "web-1" || ls["program"] != "demo" {
			t.Errorf("calls labels: %v", ls)
		}
		got[ls["pid"]+"/"+ls["comm"]] = m.GetCounter().GetValue()
	}
	if got["7/sh"] != 3 || got["8/a\"b\\\uFFFD"] != 1<<40 {
		t.Errorf("calls: %v", got)
	}
	ncpu, _ := ebpf.PossibleCPU()
	for name, want := range map[string]float64{"bpf_demo_io_reads": 2, "bpf_demo_io_writes": 5} {
		mf := mfs[name]
		if mf == nil || mf.GetType() != dto.MetricType_GAUGE || len(mf.Metric) != 1 ||
			mf.Metric[0].GetGauge().GetValue() != want*float64(ncpu) || labels(mf.Metric[0])["key"] != "42" {
			t.Errorf("%s (summed over %d CPUs): %v", name, ncpu, mf)
		}
	}
	lat := mfs["bpf_demo_lat"]
	if lat == nil || lat.GetType() != dto.MetricType_HISTOGRAM || len(lat.Metric) != 2 {
		t.Fatalf("lat: %v\n%s", lat, buf.String())
	}
	for _, m := range lat.Metric {
		h := m.GetHistogram()
		if labels(m)["key"] != "1" {
			if h.GetSampleCount() != 0 {
				t.Errorf("empty histogram: %v", h)
			}
			continue
		}
		if h.GetSampleCount() != 7 {
			t.Errorf("count %d, want 7", h.GetSampleCount())
		}
		// Slots 1 0 4 2 0 0: cumulative at le 1, 3, 7, 15, 31, 63.
		want := []struct {
			le  float64
			cum uint64
		}{{1, 1}, {3, 1}, {7, 5}, {15, 7}, {31, 7}, {63, 7}, {math.Inf(1), 7}}
		if len(h.Bucket) != len(want) {
			t.Fatalf("buckets: %v", h.Bucket)
		}
		for i, b := range h.Bucket {
			if b.GetUpperBound() != want[i].le || b.GetCumulativeCount() != want[i].cum {
				t.Errorf("bucket %d: le %v count %d, want %v", i, b.GetUpperBound(), b.GetCumulativeCount(), want[i])
			}
		}
	}

	// Reading one key at a time (kernels without batch lookups) gives the
	// same exposition.
	e.mu.Lock()
	for _, m := range e.sets["demo"].maps {
		m.noBatch = true
	}
	e.mu.Unlock()
	var one bytes.Buffer
	if err := e.WriteText(&one); err != nil {
		t.Fatal(err)
	}
	sorted := func(b []byte) string {
		lines := strings.Split(string(b), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	if sorted(one.Bytes()) != sorted(buf.Bytes()) {
		t.Errorf("one key at a time:\n%s\nbatched:\n%s", one.String(), buf.String())
	}

	// The Collector gives the same series.
	creg := prometheus.NewRegistry()
	creg.MustRegister(e)
	gathered, err := creg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range gathered {
		byName[mf.GetName()] = mf
	}
	for name, mf := range mfs {
		g := byName[name]
		if g == nil || len(g.Metric) != len(mf.Metric) || g.GetType() != mf.GetType() {
			t.Errorf("collector: %s: %v, text: %v", name, g, mf)
		}
	}
	if h := byName["bpf_demo_lat"]; h != nil {
		for _, m := range h.Metric {
			if labels(m)["key"] == "1" && (m.GetHistogram().GetSampleCount() != 7 || len(m.GetHistogram().Bucket) != 6) {
				t.Errorf("collector histogram: %v", m)
			}
		}
	}

	// The exporter's own metrics.
	own, _ := reg.Gather()
	for _, mf := range own {
		if mf.GetName() == "bpfarm_agent_export_series" && mf.Metric[0].GetGauge().GetValue() != 2+2+2 {
			t.Errorf("series: %v", mf)
		}
	}

	// Nothing exported: no info metric, nothing at all.
	e.Remove("demo")
	buf.Reset()
	if err := e.WriteText(&buf); err != nil || buf.Len() != 0 {
		t.Fatalf("after Remove: %v %q", err, buf.String())
	}
}

func TestLabelNames(t *testing.T) {
	// struct key { u32 host; u32 le; struct { u32 a; } x; u32 x_a; }
	inner := &btf.Struct{Name: "", Size: 4, Members: []btf.Member{{Name: "a", Type: u32}}}
	key := &btf.Struct{Name: "k", Size: 16, Members: []btf.Member{{Name: "host", Type: u32}, {Name: "le", Type: u32, Offset: 32},
		{Name: "x", Type: inner, Offset: 64}, {Name: "x_a", Type: u32, Offset: 96}}}
	p, err := NewPlan("my-prog", "m.x", "", ebpf.Hash, key, u64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Labels(), ","); got != "key_host,key_le,x_a,x_a_2" {
		t.Errorf("labels: %s", got)
	}
	if got := strings.Join(p.Metrics(), ","); got != "bpf_my_prog_m_x_total" {
		t.Errorf("metrics: %s", got)
	}
}
