//go:build linux

package export

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client/loader"
)

// benchExporter exports 10 pinned maps of 10k entries each, as the agent's
// export benchmark does: 8 of flows (struct key, two counters), 2 of log2
// histograms (16 slots).
func benchExporter(b *testing.B) *Exporter {
	if os.Geteuid() != 0 {
		b.Skip("creating BPF maps needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "export-bench-")
	if err != nil {
		b.Skipf("no bpffs: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	key := &btf.Struct{Name: "flow_key", Size: 8, Members: []btf.Member{{Name: "pid", Type: u32}, {Name: "cpu", Type: u32, Offset: 32}}}
	stats := &btf.Struct{Name: "flow_stats", Size: 16, Members: []btf.Member{{Name: "packets", Type: u64}, {Name: "bytes", Type: u64, Offset: 64}}}
	hist := &btf.Struct{Name: "hist", Size: 64, Members: []btf.Member{{Name: "slots", Type: &btf.Array{Index: u32, Type: u32, Nelems: 16}}}}
	const n = 10000
	l := &loader.Loaded{Name: "bench", Revision: "r"}
	var exports []api.Export
	for i := range 10 {
		name := fmt.Sprintf("m%d", i)
		spec := &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 16, MaxEntries: 10240, Key: key, Value: stats}
		if i >= 8 {
			spec = &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 64, MaxEntries: 10240, Key: u32, Value: hist}
		}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		keys, vals := make([]byte, n*int(spec.KeySize)), make([]byte, n*int(spec.ValueSize))
		for j := range n {
			binary.NativeEndian.PutUint32(keys[j*int(spec.KeySize):], uint32(j))
			binary.NativeEndian.PutUint32(vals[j*int(spec.ValueSize):], uint32(j))
		}
		for j := range n {
			if err := m.Put(keys[j*int(spec.KeySize):(j+1)*int(spec.KeySize)], vals[j*int(spec.ValueSize):(j+1)*int(spec.ValueSize)]); err != nil {
				b.Fatal(err)
			}
		}
		pin := filepath.Join(dir, name)
		if err := m.Pin(pin); err != nil {
			b.Fatal(err)
		}
		l.Maps = append(l.Maps, loader.MapState{Name: name, Pinned: pin})
		exports = append(exports, api.Export{Map: name})
	}
	e, err := New(Options{Host: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	for _, st := range e.Update(l, exports) {
		if st.Error != "" {
			b.Fatal(st.Error)
		}
	}
	return e
}

// BenchmarkExportScrape: one scrape of 10 maps × 10k entries, streamed in
// the text format (what the agent serves) against the alternative, the
// exporter as a prometheus.Collector gathered by a registry and encoded
// (what promhttp does), which materializes every series first.
func BenchmarkExportScrape(b *testing.B) {
	e := benchExporter(b)
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := e.WriteText(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gather", func(b *testing.B) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(e)
		b.ReportAllocs()
		for b.Loop() {
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
			for _, mf := range mfs {
				if err := enc.Encode(mf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
