// Package export exports the maps of loaded BPF program sets as Prometheus
// metrics, decoded with the BTF the kernel keeps with each map: no
// hand-written key layouts (as Cloudflare's ebpf_exporter needs) and no
// user-space code.
//
// A Plan says, once per map, how its entries become series:
//
//   - labels come from the key: one label per scalar field of a struct key
//     (nested structs flattened, "a.b" named a_b; char arrays as strings,
//     enums by name), or a single label "key" for a scalar key; char array
//     and enum fields of the value become labels too;
//   - counters and gauges come from the value: one metric family per
//     numeric field (bpf_PROGRAM_MAP_FIELD), or one (bpf_PROGRAM_MAP) for a
//     scalar value; counters end in _total;
//   - a log2 histogram value (a slots[] array, the libbpf-tools convention)
//     is a Prometheus histogram whose bucket le="2^(k+1)-1" counts slots
//     0..k, the inclusive upper bound of slot k's range (0→1, 2→3, 4→7, …);
//     log2 histograms do not record the sum of the values, so there is no
//     _sum series;
//   - per-CPU values are summed over the CPUs.
//
// Every series carries the labels host and program. The revision is not a
// label of the map series — a swap of revision keeps every series (and,
// with the loader carrying compatible maps over, its value) — but of the
// info metric bpfarm_program_info{host,program,revision} 1, joined with
// `* on(host,program) group_left(revision) bpfarm_program_info`.
//
// An Exporter reads the pinned maps at scrape time. WriteText streams the
// text exposition format with a scratch buffer reused across scrapes (no
// allocation per series), which is how the agent serves /metrics; the
// Exporter is also a prometheus.Collector, for programs that register it
// in a registry of their own (every series is then materialized, as
// Gather does).
package export

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client/decode"
)

// MetricPrefix starts the name of every metric family of an exported map.
const MetricPrefix = "bpf_"

// InfoMetric is the info metric naming each exporting program's revision.
const InfoMetric = "bpfarm_program_info"

// Reserved label names: a key or value field called so is labelled
// key_NAME instead.
var reserved = []string{"host", "program", "revision", "le", "quantile", "job", "instance"}

// PlanError is why a map cannot be exported.
type PlanError struct {
	Map    string
	Reason string
}

func (e *PlanError) Error() string { return "map " + e.Map + ": " + e.Reason }

// Plan is how the entries of one map become series.
type Plan struct {
	// Program and Map name the map; Kind is how it is exported.
	Program, Map, Kind string

	keySize, valueSize int
	// stride is the size of one value as the map returns it: valueSize,
	// or for per-CPU maps ncpu slots of valueSize rounded up to 8.
	stride int
	perCPU bool
	ncpu   int

	labels   []labelPlan
	families []family
	// hist is the histogram leaf (Kind histogram), and les its buckets'
	// upper bounds as text.
	hist *decode.Leaf
	les  [][]byte
}

// labelPlan is one label: a leaf of the key, or of the value.
type labelPlan struct {
	name    string
	leaf    decode.Leaf
	inValue bool
}

// family is one metric family of a map: a numeric value leaf (counter,
// gauge) or the histogram.
type family struct {
	name, help, typ string
	leaf            decode.Leaf
}

// Metrics returns the names of the metric families the plan gives.
func (p *Plan) Metrics() []string {
	out := make([]string, len(p.families))
	for i, f := range p.families {
		out[i] = f.name
	}
	return out
}

// Labels returns the names of the labels taken from the map's entries.
func (p *Plan) Labels() []string {
	out := make([]string, len(p.labels))
	for i, l := range p.labels {
		out[i] = l.name
	}
	return out
}

// Status returns the plan as a host reports it.
func (p *Plan) Status() api.ExportStatus {
	return api.ExportStatus{Map: p.Map, Kind: p.Kind, Metrics: p.Metrics(), Labels: p.Labels()}
}

// exportable are the map types whose entries are values to export.
var exportable = map[ebpf.MapType]bool{ebpf.Hash: true, ebpf.Array: true, ebpf.PerCPUHash: true, ebpf.PerCPUArray: true,
	ebpf.LRUHash: true, ebpf.LRUCPUHash: true}

// NewPlan plans the export of map mapName of program, of type typ, with the
// key and value BTF types the kernel keeps with it (decode.MapTypes), as
// kind ("" picks histogram for a log2 histogram value, else counter).
// ncpu is the number of possible CPUs (per-CPU maps hold one value each).
// It returns a *PlanError when the map has no metric form.
func NewPlan(program, mapName, kind string, typ ebpf.MapType, key, value btf.Type, ncpu int) (*Plan, error) {
	fail := func(format string, args ...any) (*Plan, error) {
		return nil, &PlanError{Map: mapName, Reason: fmt.Sprintf(format, args...)}
	}
	if !exportable[typ] {
		return fail("a %s map holds no values to export (hash, array, their per-CPU and LRU variants do)", typ)
	}
	if value == nil {
		return fail("no BTF type for the value")
	}
	vd, err := decode.New(value)
	if err != nil {
		return fail("value: %v", err)
	}
	p := &Plan{Program: program, Map: mapName, Kind: kind, valueSize: vd.Size(), perCPU: typ == ebpf.PerCPUHash || typ == ebpf.PerCPUArray || typ == ebpf.LRUCPUHash, ncpu: 1}
	p.stride = p.valueSize
	if p.perCPU {
		p.ncpu = max(ncpu, 1)
		p.stride = p.ncpu * ((p.valueSize + 7) &^ 7)
	}
	names := map[string]bool{}
	addLabel := func(path string, l decode.Leaf, inValue bool) {
		name := labelName(path)
		if slices.Contains(reserved, name) || strings.HasPrefix(name, "__") {
			name = "key_" + strings.TrimLeft(name, "_")
		}
		for base, i := name, 2; names[name]; i++ {
			name = base + "_" + strconv.Itoa(i)
		}
		names[name] = true
		p.labels = append(p.labels, labelPlan{name: name, leaf: l, inValue: inValue})
	}
	if key != nil {
		kd, err := decode.New(key)
		if err != nil {
			return fail("key: %v", err)
		}
		p.keySize = kd.Size()
		for _, l := range kd.Leaves() {
			if l.Kind == decode.LeafHistogram {
				return fail("key field %s is a log2 histogram: it cannot label series", l.Path)
			}
			path := l.Path
			if path == "" {
				path = "key"
			}
			addLabel(path, l, false)
		}
	} else if typ != ebpf.Array && typ != ebpf.PerCPUArray {
		return fail("no BTF type for the key")
	} else {
		p.keySize = 4
		kd, _ := decode.New(&btf.Int{Name: "u32", Size: 4})
		addLabel("key", kd.Leaves()[0], false)
	}

	leaves := vd.Leaves()
	var numbers []decode.Leaf
	for i, l := range leaves {
		switch l.Kind {
		case decode.LeafHistogram:
			if p.hist == nil {
				p.hist = &leaves[i]
			}
		case decode.LeafNumber:
			numbers = append(numbers, l)
		case decode.LeafString, decode.LeafEnum:
			if !p.perCPU { // per-CPU copies of a name need not agree
				addLabel(l.Path, l, true)
			}
		}
	}
	if p.Kind == "" {
		p.Kind = api.ExportCounter
		if p.hist != nil {
			p.Kind = api.ExportHistogram
		}
	}
	base := MetricPrefix + metricName(program) + "_" + metricName(mapName)
	switch p.Kind {
	case api.ExportHistogram:
		if p.hist == nil {
			return fail("value type %s has no slots[] array of counters: it is not a log2 histogram", decode.TypeName(value))
		}
		name := base
		if p.hist.Path != "slots" {
			name += "_" + metricName(strings.TrimSuffix(p.hist.Path, ".slots"))
		}
		p.families = []family{{name: name, typ: "histogram", leaf: *p.hist,
			help: fmt.Sprintf("Log2 histogram %s of map %s of program %s.", p.hist.Path, mapName, program)}}
		for i := range p.hist.Slots() {
			_, high := decode.SlotRange(i)
			p.les = append(p.les, strconv.AppendUint(nil, high, 10))
		}
		p.les = append(p.les, []byte("+Inf"))
	case api.ExportCounter, api.ExportGauge:
		if p.hist != nil {
			return fail("value type %s is a log2 histogram: export it as histogram (or leave the kind out)", decode.TypeName(value))
		}
		if len(numbers) == 0 {
			return fail("value type %s has no numeric field to export", decode.TypeName(value))
		}
		seen := map[string]bool{}
		for _, l := range numbers {
			name := base
			if l.Path != "" {
				name += "_" + metricName(l.Path)
			}
			if p.Kind == api.ExportCounter && !strings.HasSuffix(name, "_total") {
				name += "_total"
			}
			for b, i := name, 2; seen[name]; i++ {
				name = b + "_" + strconv.Itoa(i)
			}
			seen[name] = true
			what := "Value"
			if l.Path != "" {
				what = "Field " + l.Path
			}
			p.families = append(p.families, family{name: name, typ: p.Kind, leaf: l,
				help: fmt.Sprintf("%s of map %s of program %s.", what, mapName, program)})
		}
	default:
		return fail("kind %q: want %s", p.Kind, strings.Join(api.ExportKinds, ", "))
	}
	return p, nil
}

// metricName makes s a part of a metric name: anything but letters,
// digits and '_' becomes '_'.
func metricName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// labelName makes a field path a label name.
func labelName(path string) string {
	n := metricName(path)
	if n == "" || n[0] >= '0' && n[0] <= '9' {
		n = "_" + n
	}
	return n
}
