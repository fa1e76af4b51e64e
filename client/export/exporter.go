package export

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/bpfarm/bpfarm/client/loader"
)

// batchSize is how many entries one batch lookup reads.
const batchSize = 256

// Exporter exports the maps of loaded program sets. It is safe for
// concurrent use; scrapes are serialized (they share one scratch buffer).
type Exporter struct {
	host string
	log  *slog.Logger
	ncpu int

	mu   sync.Mutex
	sets map[string]*set
	// scratch holds one map's entries during a scrape; out is the line
	// being written. Both are reused across scrapes.
	scratch []byte
	out     []byte

	series      prometheus.Gauge
	scrapeErrs  prometheus.Counter
	exportState *prometheus.GaugeVec
}

// set is what one program exports.
type set struct {
	program, revision string
	maps              []*exported
	statuses          []api.ExportStatus
}

// exported is one exported map, open by its pin.
type exported struct {
	plan *Plan
	m    *ebpf.Map
	// keys and values are batch buffers: slices of byte arrays of the
	// key size and the value stride (per-CPU: ncpu × value size rounded
	// up to 8), in reflect form, as cilium/ebpf's batch API wants them.
	keys, values any
	keyMem, vMem []byte
	noBatch      bool
}

// Options configure an Exporter.
type Options struct {
	// Host is the value of every series' host label.
	Host string
	// Logger logs scrape failures (default slog.Default()).
	Logger *slog.Logger
	// Registerer receives the exporter's own metrics (series exported,
	// scrape errors, exports by state); nil: none.
	Registerer prometheus.Registerer
}

// New returns an Exporter exporting nothing yet.
func New(opt Options) (*Exporter, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		ncpu = 1 // not Linux: there are no maps to export
	}
	e := &Exporter{host: opt.Host, log: opt.Logger, ncpu: ncpu, sets: map[string]*set{},
		series: prometheus.NewGauge(prometheus.GaugeOpts{Name: "bpfarm_agent_export_series",
			Help: "Series of exported maps in the last scrape."}),
		scrapeErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "bpfarm_agent_export_read_errors_total",
			Help: "Exported maps that could not be read during a scrape."}),
		exportState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bpfarm_agent_exports",
			Help: "Maps assigned for export, by state: exported, or error (reported to the server)."}, []string{"state"}),
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if opt.Registerer != nil {
		if err := opt.Registerer.Register(e.series); err != nil {
			return nil, err
		}
		opt.Registerer.MustRegister(e.scrapeErrs, e.exportState)
	}
	return e, nil
}

// Update sets what program exports: the maps of its loaded set l named by
// exports. It returns each export's status: its metric families and
// labels, or why it cannot be exported (the map is not in the set, not
// pinned, has no BTF, or has no metric form). With no exports, the
// program exports nothing.
func (e *Exporter) Update(l *loader.Loaded, exports []api.Export) []api.ExportStatus {
	s := &set{program: l.Name, revision: l.Revision}
	for _, x := range exports {
		em, err := e.open(l, x)
		if err != nil {
			s.statuses = append(s.statuses, api.ExportStatus{Map: x.Map, Kind: x.Kind, Error: err.Error()})
			continue
		}
		s.maps = append(s.maps, em)
		s.statuses = append(s.statuses, em.plan.Status())
	}
	e.mu.Lock()
	old := e.sets[l.Name]
	if len(exports) == 0 {
		delete(e.sets, l.Name)
	} else {
		e.sets[l.Name] = s
	}
	e.updateGauges()
	e.mu.Unlock()
	if old != nil {
		old.close()
	}
	return slices.Clone(s.statuses)
}

// Remove stops exporting program's maps.
func (e *Exporter) Remove(program string) {
	e.mu.Lock()
	old := e.sets[program]
	delete(e.sets, program)
	e.updateGauges()
	e.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// Close stops exporting anything.
func (e *Exporter) Close() {
	e.mu.Lock()
	sets := e.sets
	e.sets = map[string]*set{}
	e.mu.Unlock()
	for _, s := range sets {
		s.close()
	}
}

// Statuses returns the export statuses of program (nil if it exports
// nothing).
func (e *Exporter) Statuses(program string) []api.ExportStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.sets[program]; s != nil {
		return slices.Clone(s.statuses)
	}
	return nil
}

func (e *Exporter) updateGauges() {
	var ok, bad int
	for _, s := range e.sets {
		for _, st := range s.statuses {
			if st.Error != "" {
				bad++
			} else {
				ok++
			}
		}
	}
	e.exportState.WithLabelValues("exported").Set(float64(ok))
	e.exportState.WithLabelValues("error").Set(float64(bad))
}

func (s *set) close() {
	for _, m := range s.maps {
		m.m.Close()
	}
}

// open opens and plans one export of l.
func (e *Exporter) open(l *loader.Loaded, x api.Export) (*exported, error) {
	ms := l.Map(x.Map)
	if ms == nil {
		names := make([]string, 0, len(l.Maps))
		for _, m := range l.Maps {
			names = append(names, m.Name)
		}
		return nil, &PlanError{Map: x.Map, Reason: fmt.Sprintf("not in the loaded set of %s (its maps: %s)", l.Name,
			strings.Join(names, ", "))}
	}
	if ms.Pinned == "" {
		return nil, &PlanError{Map: x.Map, Reason: "not pinned"}
	}
	m, err := ebpf.LoadPinnedMap(ms.Pinned, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, &PlanError{Map: x.Map, Reason: fmt.Sprintf("open its pin: %v", err)}
	}
	if !exportable[m.Type()] {
		m.Close()
		_, err := NewPlan(l.Name, x.Map, x.Kind, m.Type(), nil, nil, e.ncpu) // the error naming the type
		return nil, err
	}
	key, value, err := decode.MapTypes(m)
	if err != nil {
		m.Close()
		if errors.Is(err, decode.ErrNoBTF) {
			return nil, &PlanError{Map: x.Map, Reason: "it has no BTF for its key and value (the object was built without -g, or the kernel lacks map BTF): its entries cannot be decoded"}
		}
		return nil, &PlanError{Map: x.Map, Reason: err.Error()}
	}
	p, err := NewPlan(l.Name, x.Map, x.Kind, m.Type(), key, value, e.ncpu)
	if err != nil {
		m.Close()
		return nil, err
	}
	if int(m.KeySize()) != p.keySize || int(m.ValueSize()) != p.valueSize {
		m.Close()
		return nil, &PlanError{Map: x.Map, Reason: fmt.Sprintf("its key and value are %d and %d bytes, but their BTF types %d and %d",
			m.KeySize(), m.ValueSize(), p.keySize, p.valueSize)}
	}
	em := &exported{plan: p, m: m}
	ks := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(p.keySize, reflect.TypeFor[byte]())), batchSize, batchSize)
	elem, n := p.stride, batchSize
	if p.perCPU {
		// cilium/ebpf wants ncpu values per key, each of the value size
		// rounded up to 8.
		elem, n = p.stride/p.ncpu, batchSize*p.ncpu
	}
	vs := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(elem, reflect.TypeFor[byte]())), n, n)
	em.keys, em.values = ks.Interface(), vs.Interface()
	em.keyMem = unsafe.Slice((*byte)(ks.UnsafePointer()), batchSize*p.keySize)
	em.vMem = unsafe.Slice((*byte)(vs.UnsafePointer()), batchSize*p.stride)
	return em, nil
}

// read reads every entry of em into buf (key, then value stride, per
// entry) and returns it with the entry count.
func (em *exported) read(buf []byte) ([]byte, int, error) {
	buf = buf[:0]
	n := 0
	if !em.noBatch {
		var cursor ebpf.MapBatchCursor
		for {
			got, err := em.m.BatchLookup(&cursor, em.keys, em.values, nil)
			for i := range got {
				buf = append(buf, em.keyMem[i*em.plan.keySize:(i+1)*em.plan.keySize]...)
				buf = append(buf, em.vMem[i*em.plan.stride:(i+1)*em.plan.stride]...)
			}
			n += got
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return buf, n, nil
			}
			if errors.Is(err, ebpf.ErrNotSupported) && n == 0 || errors.Is(err, unix.ENOSPC) {
				// No batch lookups in this kernel, or a hash bucket
				// larger than a batch: read one key at a time.
				em.noBatch, buf, n = true, buf[:0], 0
				break
			}
			if err != nil {
				return buf, n, err
			}
		}
	}
	// Kernels without batch lookups: one key at a time.
	key := reflect.New(reflect.TypeOf(em.keys).Elem())
	keyMem := unsafe.Slice((*byte)(key.UnsafePointer()), em.plan.keySize)
	var value any
	var vMem []byte
	if em.plan.perCPU {
		v := reflect.ValueOf(em.values).Slice(0, em.plan.ncpu)
		value, vMem = v.Interface(), em.vMem[:em.plan.stride]
	} else {
		v := reflect.New(reflect.TypeOf(em.values).Elem())
		value, vMem = v.Interface(), unsafe.Slice((*byte)(v.UnsafePointer()), em.plan.stride)
	}
	it := em.m.Iterate()
	for it.Next(key.Interface(), value) {
		buf = append(buf, keyMem...)
		buf = append(buf, vMem...)
		n++
	}
	return buf, n, it.Err()
}

// WriteText writes the info metric and every exported map's series in the
// Prometheus text exposition format (version 0.0.4).
func (e *Exporter) WriteText(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	err := e.emit(&textSink{w: bw})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// sink receives a scrape's families and series.
type sink interface {
	family(name, help, typ string) error
	// sample writes one series: name (with a suffix), labels (names and
	// values: values as raw bytes in vals), an extra label (le) when
	// extra is not empty, and the value.
	sample(name, suffix string, names []string, vals [][]byte, extraName string, extra []byte, v float64) error
}

// emit walks every exported map into s.
func (e *Exporter) emit(s sink) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	programs := make([]string, 0, len(e.sets))
	for p := range e.sets {
		programs = append(programs, p)
	}
	slices.Sort(programs)
	if len(programs) > 0 {
		if err := s.family(InfoMetric, "The revision of each program whose maps are exported (join on host and program).", "gauge"); err != nil {
			return err
		}
		for _, p := range programs {
			st := e.sets[p]
			if err := s.sample(InfoMetric, "", []string{"host", "program", "revision"},
				[][]byte{[]byte(e.host), []byte(st.program), []byte(st.revision)}, "", nil, 1); err != nil {
				return err
			}
		}
	}
	total := 0
	for _, p := range programs {
		st := e.sets[p]
		for _, em := range st.maps {
			buf, n, err := em.read(e.scratch)
			e.scratch = buf
			if err != nil {
				e.scrapeErrs.Inc()
				e.log.Warn("read an exported map", "program", st.program, "map", em.plan.Map, "err", err)
				continue
			}
			c, err := e.emitMap(s, em.plan, buf, n)
			total += c
			if err != nil {
				return err
			}
		}
	}
	e.series.Set(float64(total))
	return nil
}

// emitMap writes the families of plan from n entries in buf.
func (e *Exporter) emitMap(s sink, p *Plan, buf []byte, n int) (int, error) {
	entry := p.keySize + p.stride
	names := make([]string, 0, 2+len(p.labels))
	names = append(names, "host", "program")
	for _, l := range p.labels {
		names = append(names, l.name)
	}
	vals := make([][]byte, len(names))
	vals[0], vals[1] = []byte(e.host), []byte(p.Program)
	// labelBuf holds the label values of one entry.
	labelBuf := e.out[:0]
	ends := make([]int, len(p.labels))
	count := 0
	for _, f := range p.families {
		if err := s.family(f.name, f.help, f.typ); err != nil {
			return count, err
		}
		for i := range n {
			rec := buf[i*entry : (i+1)*entry]
			key, value := rec[:p.keySize], rec[p.keySize:]
			labelBuf = labelBuf[:0]
			for j, l := range p.labels {
				if l.inValue {
					labelBuf = l.leaf.AppendText(labelBuf, value[:p.valueSize])
				} else {
					labelBuf = l.leaf.AppendText(labelBuf, key)
				}
				ends[j] = len(labelBuf)
			}
			start := 0
			for j, end := range ends {
				vals[2+j] = labelBuf[start:end]
				start = end
			}
			if f.typ != "histogram" {
				v := 0.0
				for c := range p.ncpu {
					v += f.leaf.Float(value[c*(p.stride/p.ncpu):][:p.valueSize])
				}
				if err := s.sample(f.name, "", names, vals, "", nil, v); err != nil {
					return count, err
				}
				count++
				continue
			}
			var cum uint64
			for k := range f.leaf.Slots() {
				for c := range p.ncpu {
					cum += f.leaf.Slot(value[c*(p.stride/p.ncpu):][:p.valueSize], k)
				}
				if err := s.sample(f.name, "_bucket", names, vals, "le", p.les[k], float64(cum)); err != nil {
					return count, err
				}
			}
			if err := s.sample(f.name, "_bucket", names, vals, "le", p.les[len(p.les)-1], float64(cum)); err != nil {
				return count, err
			}
			if err := s.sample(f.name, "_count", names, vals, "", nil, float64(cum)); err != nil {
				return count, err
			}
			count++
		}
	}
	e.out = labelBuf[:0]
	return count, nil
}

// textSink writes the text exposition format.
type textSink struct {
	w    *bufio.Writer
	line []byte
}

func (t *textSink) family(name, help, typ string) error {
	t.line = append(t.line[:0], "# HELP "...)
	t.line = append(t.line, name...)
	t.line = append(t.line, ' ')
	t.line = append(t.line, help...)
	t.line = append(t.line, "\n# TYPE "...)
	t.line = append(t.line, name...)
	t.line = append(t.line, ' ')
	t.line = append(t.line, typ...)
	t.line = append(t.line, '\n')
	_, err := t.w.Write(t.line)
	return err
}

func (t *textSink) sample(name, suffix string, names []string, vals [][]byte, extraName string, extra []byte, v float64) error {
	b := append(t.line[:0], name...)
	b = append(b, suffix...)
	b = append(b, '{')
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendLabel(b, n, vals[i])
	}
	if extraName != "" {
		b = append(b, ',')
		b = appendLabel(b, extraName, extra)
	}
	b = append(b, '}', ' ')
	b = appendValue(b, v)
	b = append(b, '\n')
	t.line = b
	_, err := t.w.Write(b)
	return err
}

// appendLabel appends name="value", escaped as the text format wants
// (backslash, quote, newline), invalid UTF-8 replaced.
func appendLabel(b []byte, name string, v []byte) []byte {
	b = append(b, name...)
	b = append(b, '=', '"')
	valid := utf8.Valid(v)
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c < utf8.RuneSelf || valid:
			b = append(b, c)
		default:
			r, size := utf8.DecodeRune(v[i:])
			b = utf8.AppendRune(b, r) // RuneError for invalid bytes
			i += size
			continue
		}
		i++
	}
	return append(b, '"')
}

// appendValue appends a sample value: integers exactly, else the
// shortest float form.
func appendValue(b []byte, v float64) []byte {
	if v == float64(int64(v)) && v < 1<<63 && v > -(1<<63) {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// Describe implements prometheus.Collector: the exporter is unchecked (its
// families depend on what is assigned).
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector. Unlike WriteText, it
// materializes every series (as prometheus.Registry.Gather does).
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	cs := &collectSink{ch: ch}
	err := e.emit(cs)
	if err == nil {
		cs.flush()
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("bpfarm_export_error", "Export failure.", nil, nil), err)
	}
}

// collectSink turns a scrape into prometheus.Metrics.
type collectSink struct {
	ch   chan<- prometheus.Metric
	typ  string
	help string
	// hist accumulates one histogram series: its labels and buckets.
	hist    *histSeries
	pending string
}

type histSeries struct {
	names, vals []string
	buckets     map[float64]uint64
}

func (c *collectSink) family(name, help, typ string) error {
	c.flush()
	c.typ, c.help = typ, help
	return nil
}

func (c *collectSink) flush() {
	if c.hist == nil {
		return
	}
	h := c.hist
	var count uint64
	for le, n := range h.buckets {
		if le == posInf {
			count = n
			delete(h.buckets, le)
		}
	}
	desc := prometheus.NewDesc(c.pending, c.help, h.names, nil)
	c.ch <- prometheus.MustNewConstHistogram(desc, count, 0, h.buckets, h.vals...)
	c.hist = nil
}

var posInf = func() float64 { f, _ := strconv.ParseFloat("+Inf", 64); return f }()

func (c *collectSink) sample(name, suffix string, names []string, vals [][]byte, extraName string, extra []byte, v float64) error {
	sv := make([]string, len(vals))
	for i, b := range vals {
		sv[i] = strings.ToValidUTF8(string(b), "\uFFFD")
	}
	switch {
	case c.typ == "histogram" && suffix == "_bucket":
		if c.hist != nil && (c.pending != name || !slices.Equal(c.hist.vals, sv)) {
			c.flush()
		}
		if c.hist == nil {
			c.hist = &histSeries{names: slices.Clone(names), vals: sv, buckets: map[float64]uint64{}}
			c.pending = name
		}
		le, err := strconv.ParseFloat(string(extra), 64)
		if err != nil {
			return err
		}
		c.hist.buckets[le] = uint64(v)
		return nil
	case c.typ == "histogram":
		return nil // _count: the +Inf bucket gives it
	}
	c.flush()
	vt := prometheus.GaugeValue
	if c.typ == api.ExportCounter {
		vt = prometheus.CounterValue
	}
	m, err := prometheus.NewConstMetric(prometheus.NewDesc(name, c.help, names, nil), vt, v, sv...)
	if err != nil {
		return err
	}
	c.ch <- m
	return nil
}
