package api

import (
	"fmt"
	"regexp"
	"strings"
)

// Export kinds: how an exported map's values become Prometheus metrics.
const (
	// ExportCounter exports each numeric value (each numeric field of a
	// struct value) as a counter.
	ExportCounter = "counter"
	// ExportGauge exports each numeric value as a gauge.
	ExportGauge = "gauge"
	// ExportHistogram exports a log2 histogram value (a slots[] array of
	// counters, the libbpf-tools convention) as a Prometheus histogram.
	ExportHistogram = "histogram"
)

// ExportKinds are the valid Export.Kind values ("" picks one from the
// map's value type).
var ExportKinds = []string{ExportCounter, ExportGauge, ExportHistogram}

// Export names a map of an assigned program that the hosts running it
// export as Prometheus metrics on their agent's /metrics.
type Export struct {
	// Map is the map's name in the object.
	Map string `json:"map"`
	// Kind is counter, gauge or histogram. Empty: histogram when the
	// value is a log2 histogram (holds a slots[] array), else counter.
	Kind string `json:"kind,omitempty"`
}

// String returns the MAP[:KIND] form ParseExport reads.
func (e Export) String() string {
	if e.Kind == "" {
		return e.Map
	}
	return e.Map + ":" + e.Kind
}

// maxExports bounds the exports of one assignment.
const maxExports = 64

var mapNameRE = regexp.MustCompile(`^[A-Za-z_.][A-Za-z0-9_.]{0,127}$`)

// Validate checks an export: a map name as C and the BPF ELF loader know
// them, and a known kind.
func (e Export) Validate() error {
	if !mapNameRE.MatchString(e.Map) {
		return fmt.Errorf("export %q: a map name is 1-128 letters, digits, '_' or '.', not starting with a digit", e.Map)
	}
	switch e.Kind {
	case "", ExportCounter, ExportGauge, ExportHistogram:
		return nil
	}
	return fmt.Errorf("export %s: kind %q: want %s", e.Map, e.Kind, strings.Join(ExportKinds, ", "))
}

// ValidateExports checks a list of exports: each valid, no map twice.
func ValidateExports(es []Export) error {
	if len(es) > maxExports {
		return fmt.Errorf("%d exports: at most %d", len(es), maxExports)
	}
	seen := map[string]bool{}
	for _, e := range es {
		if err := e.Validate(); err != nil {
			return err
		}
		if seen[e.Map] {
			return fmt.Errorf("export %s: the map is named twice", e.Map)
		}
		seen[e.Map] = true
	}
	return nil
}

// ParseExport parses MAP[:counter|gauge|histogram].
func ParseExport(s string) (Export, error) {
	m, kind, _ := strings.Cut(s, ":")
	e := Export{Map: m, Kind: kind}
	if err := e.Validate(); err != nil {
		return Export{}, err
	}
	return e, nil
}

// ExportStatus is how a host exports one map of a program
// (HostProgram.Exports).
type ExportStatus struct {
	Map string `json:"map"`
	// Kind is the kind exported: the requested one, or the one picked from
	// the value type.
	Kind string `json:"kind,omitempty"`
	// Metrics are the names of the metric families the map gives.
	Metrics []string `json:"metrics,omitempty"`
	// Labels are the labels taken from the map's key.
	Labels []string `json:"labels,omitempty"`
	// Error says why the map cannot be exported (not in the loaded set,
	// not pinned, no BTF, a key or value type that has no metric form);
	// empty when it is exported.
	Error string `json:"error,omitempty"`
}
