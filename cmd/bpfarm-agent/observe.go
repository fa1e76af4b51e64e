package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/client/observe"
)

// followFlags are the options of events and load --follow.
type followFlags struct {
	maps     []string
	count    uint64
	duration time.Duration
}

func (ff *followFlags) register(f *pflag.FlagSet) {
	f.StringArrayVar(&ff.maps, "map", nil, "follow only this ring buffer or perf event array (repeatable; default: all)")
	f.Uint64Var(&ff.count, "count", 0, "stop after this many records (0: no limit)")
	f.DurationVar(&ff.duration, "duration", 0, "stop after this long (0: until interrupted)")
}

func newEvents(g *globals) *cobra.Command {
	var (
		lf loadFlags
		ff followFlags
	)
	cmd := &cobra.Command{
		Use:   "events NAME",
		Short: "Follow the records a loaded set's programs write, decoded with BTF",
		Long: `Follow the ring buffers and perf event arrays of the loaded set NAME (from
its pins under --pin-dir and its state in --state-dir) and print each record
decoded with its type from BTF: a table whose columns are the record's fields,
or with --json one JSON object per line:

  {"map":"events","cpu":-1,"record":{"pid":42,"comm":"bash",...}}

A record whose size disagrees with its type is printed raw with a warning; lost
samples (perf event arrays) are counted and shown. --count and --duration end
the stream, as does Ctrl-C; the programs stay loaded either way.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := observe.Open(args[0], loader.Options{PinDir: lf.pinDir, StateDir: lf.stateDir})
			if err != nil {
				return err
			}
			return follow(cmd.Context(), set, ff, g.json, os.Stdout, os.Stderr)
		},
	}
	lf.register(cmd.Flags())
	ff.register(cmd.Flags())
	return cmd
}

// follow prints set's records until ff's limits, ctx's end or an error.
func follow(ctx context.Context, set *observe.Set, ff followFlags, asJSON bool, stdout, stderr io.Writer) error {
	if ff.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ff.duration)
		defer cancel()
	}
	evs, err := set.Events(ctx, ff.maps...)
	if err != nil {
		return err
	}
	defer evs.Close()

	outputs := set.Outputs()
	if len(ff.maps) > 0 {
		outputs = outputs[:0]
		for _, n := range ff.maps {
			m, _ := set.Map(n)
			outputs = append(outputs, m)
		}
	}
	for _, m := range outputs {
		if m.Record == nil {
			fmt.Fprintf(stderr, "bpfarm-agent: warning: %s: records shown raw: %s\n", m.Name, m.RecordNote)
		}
		fmt.Fprintf(stderr, "following %s %s of %s (%s)\n", m.Type, m.Name, set.Name, recordDesc(m))
	}

	w := bufio.NewWriterSize(stdout, 64<<10)
	defer w.Flush()
	tables := make(map[*observe.Map]*decode.Table)
	prefix := len(outputs) > 1
	var buf []byte
	var shown uint64
	for ff.count == 0 || shown < ff.count {
		ev, err := evs.Next()
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				break
			}
			return fmt.Errorf("events: %w", err)
		}
		buf = buf[:0]
		if ev.Lost > 0 {
			if asJSON {
				buf = fmt.Appendf(buf, `{"map":%q,"cpu":%d,"lost":%d}`+"\n", ev.Map.Name, ev.CPU, ev.Lost)
			} else {
				fmt.Fprintf(stderr, "bpfarm-agent: %s: %d samples lost on CPU %d (%d in all)\n", ev.Map.Name, ev.Lost, ev.CPU, evs.Lost())
			}
			w.Write(buf)
			w.Flush()
			continue
		}
		shown++
		if asJSON {
			buf = fmt.Appendf(buf, `{"map":%q,"cpu":%d,"record":`, ev.Map.Name, ev.CPU)
			out, err := ev.AppendJSON(buf)
			if err != nil {
				buf = fmt.Appendf(buf[:0], `{"map":%q,"cpu":%d,"raw":"%s","warning":%q}`, ev.Map.Name, ev.CPU, hex.EncodeToString(ev.Raw), err.Error())
				if ev.Map.Record != nil { // undecoded maps were announced once
					fmt.Fprintf(stderr, "bpfarm-agent: warning: %s: %v: shown raw\n", ev.Map.Name, err)
				}
			} else {
				buf = append(out, '}')
			}
			buf = append(buf, '\n')
		} else {
			t := tables[ev.Map]
			if t == nil && ev.Map.Record != nil {
				t = decode.NewTable(ev.Map.Record)
				tables[ev.Map] = t
				if prefix {
					buf = append(buf, "MAP  "...)
				}
				buf = append(buf, t.Header()...)
			}
			if prefix {
				buf = append(buf, ev.Map.Name+"  "...)
			}
			var err error = observe.ErrNoType
			if t != nil {
				var out []byte
				if out, err = ev.AppendRow(buf, t); err == nil {
					buf = out
				}
			}
			if err != nil {
				if t != nil {
					fmt.Fprintf(stderr, "bpfarm-agent: warning: %s: %v: shown raw\n", ev.Map.Name, err)
				}
				buf = append(buf, "raw 0x"...)
				buf = hex.AppendEncode(buf, ev.Raw)
				buf = append(buf, '\n')
			}
		}
		w.Write(buf)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("events: %w", err)
		}
	}
	w.Flush()
	if !asJSON {
		fmt.Fprintf(stderr, "%d records, %d lost\n", evs.Count(), evs.Lost())
	}
	return nil
}

func newMaps(g *globals) *cobra.Command {
	var lf loadFlags
	cmd := &cobra.Command{
		Use:   "maps NAME [MAP]",
		Short: "Dump a loaded set's maps decoded with BTF",
		Long: `Print the maps of the loaded set NAME (or only MAP) decoded with BTF: keys and
values by field, per-CPU values, and the .rodata/.data/.bss globals. Values
with a slots[] array of counters (the libbpf-tools convention) are log2
histograms: printed as bar charts, one per key, and as buckets with --json.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := observe.Open(args[0], loader.Options{PinDir: lf.pinDir, StateDir: lf.stateDir})
			if err != nil {
				return err
			}
			maps := set.Maps
			if len(args) == 2 {
				m, err := set.Map(args[1])
				if err != nil {
					return err
				}
				maps = []*observe.Map{m}
			}
			return dumpMaps(os.Stdout, maps, g.json, len(args) == 2)
		},
	}
	lf.register(cmd.Flags())
	return cmd
}

// mapDump is the JSON form of one map.
type mapDump struct {
	Name      string      `json:"name"`
	Type      string      `json:"type"`
	KeyType   string      `json:"key_type,omitempty"`
	ValueType string      `json:"value_type,omitempty"`
	PerCPU    bool        `json:"per_cpu,omitempty"`
	Entries   []entryDump `json:"entries"`
}

type entryDump struct {
	Key    any   `json:"key,omitempty"`
	Value  any   `json:"value,omitempty"`
	PerCPU []any `json:"per_cpu,omitempty"`
}

// dumpMaps prints maps.
func dumpMaps(w io.Writer, maps []*observe.Map, asJSON, one bool) error {
	var dumps []mapDump
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	for _, m := range maps {
		if m.Output() {
			if one {
				return fmt.Errorf("map %s is a %s: follow its records with bpfarm-agent events --map %s", m.Name, m.Type, m.Name)
			}
			continue
		}
		entries, err := m.Entries()
		if err != nil {
			return err
		}
		if asJSON {
			d := mapDump{Name: m.Name, Type: m.Type.String(), PerCPU: m.PerCPU(), Entries: []entryDump{}}
			if m.Key != nil && !m.Globals() {
				d.KeyType = m.Key.TypeName()
			}
			if m.Value != nil {
				d.ValueType = m.Value.TypeName()
			}
			for _, e := range entries {
				d.Entries = append(d.Entries, entryDump{Key: e.Key, Value: e.Value, PerCPU: e.PerCPU})
			}
			dumps = append(dumps, d)
			continue
		}
		printMap(bw, m, entries)
	}
	if asJSON {
		bw.Flush()
		if one && len(dumps) == 1 {
			return printJSON(dumps[0])
		}
		if dumps == nil {
			dumps = []mapDump{}
		}
		return printJSON(dumps)
	}
	return nil
}

// printMap prints one map's entries as text.
func printMap(w io.Writer, m *observe.Map, entries []observe.Entry) {
	desc := m.Type.String()
	if m.Key != nil && !m.Globals() {
		desc += ", key " + m.Key.TypeName()
	}
	if m.Value != nil && !m.Globals() {
		desc += ", value " + m.Value.TypeName()
	}
	fmt.Fprintf(w, "%s (%s)\n", m.Name, desc)
	if m.Globals() {
		for _, e := range entries {
			if s, ok := e.Value.(decode.Struct); ok {
				for _, f := range s {
					fmt.Fprintf(w, "  %s = %s\n", f.Name, decode.FormatValue(f.Value))
				}
			} else {
				fmt.Fprintf(w, "  %s\n", decode.FormatValue(e.Value))
			}
		}
		return
	}
	hist := m.Value != nil && m.Value.Histogram()
	zeros := 0
	for _, e := range entries {
		if isArray(m) && allZero(e.RawValues) {
			zeros++
			continue
		}
		key := decode.FormatValue(e.Key)
		if hist {
			h, _ := observe.Histogram(e.Value)
			extra := ""
			if s, ok := e.Value.(decode.Struct); ok {
				for _, f := range s {
					if f.Name != "slots" {
						extra += " " + f.Name + "=" + decode.FormatValue(f.Value)
					}
				}
			}
			fmt.Fprintf(w, "\n  key %s%s: %d values\n", key, extra, h.Total())
			chart := decode.AppendHistogram(nil, h, m.Name)
			fmt.Fprint(w, indent(string(chart), "  "))
			continue
		}
		if len(e.PerCPU) > 0 {
			parts := make([]string, len(e.PerCPU))
			for i, v := range e.PerCPU {
				parts[i] = fmt.Sprintf("cpu%d=%s", i, decode.FormatValue(v))
			}
			fmt.Fprintf(w, "  %s: %s\n", key, strings.Join(parts, " "))
			continue
		}
		fmt.Fprintf(w, "  %s: %s\n", key, decode.FormatValue(e.Value))
	}
	if zeros > 0 {
		fmt.Fprintf(w, "  (%d entries all zero not shown)\n", zeros)
	}
	if len(entries) == 0 {
		fmt.Fprintln(w, "  (empty)")
	}
}

func isArray(m *observe.Map) bool {
	return strings.Contains(m.Type.String(), "Array")
}

func allZero(vals [][]byte) bool {
	for _, v := range vals {
		for _, b := range v {
			if b != 0 {
				return false
			}
		}
	}
	return true
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var sb strings.Builder
	for _, l := range lines {
		if l != "" {
			sb.WriteString(prefix + l)
		}
	}
	return sb.String()
}

// recordDesc says what m's records are.
func recordDesc(m *observe.Map) string {
	if m.Record == nil {
		return "records undecoded"
	}
	return fmt.Sprintf("%s records, %s", m.Record.TypeName(), m.RecordOrigin)
}

// withoutBTF returns l without its BTF, which JSON listings need not show.
func withoutBTF(l *loader.Loaded) *loader.Loaded {
	c := *l
	c.BTF = nil
	return &c
}
