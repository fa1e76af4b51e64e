package blob_test

import (
	"errors"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/blob/blobtest"
)

func TestVerifyingConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return blob.Verifying(newLocal(t)) })
}

func TestWithMetricsConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		reg := prometheus.NewPedanticRegistry()
		return blob.WithMetrics(blob.Verifying(newLocal(t)), reg, "local")
	})
}

func TestWithMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := blob.WithMetrics(newLocal(t), reg, "local")
	// A second store on the same registry shares the collectors.
	other := blob.WithMetrics(newLocal(t), reg, "other")
	// A nil registry is fine.
	_ = blob.WithMetrics(newLocal(t), nil, "none")

	b := blobtest.Random(1, 12345)
	d, err := blob.PutBytes(t.Context(), s, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blob.PutBytes(t.Context(), other, b); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.ReadAll(t.Context(), s, d, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(t.Context(), blob.Sum(nil)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat(absent): %v", err)
	}
	if _, err := s.Put(t.Context(), errReader{}, -1, blob.Digest{}); err == nil {
		t.Fatal("Put(failing reader): no error")
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) float64 {
		t.Helper()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metrics:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range m.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue metrics
					}
				}
				return value(m)
			}
		}
		t.Errorf("no metric %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bpfarm_blob_operations_total", map[string]string{"backend": "local", "op": "put", "result": "ok"}, 1},
		{"bpfarm_blob_operations_total", map[string]string{"backend": "local", "op": "put", "result": "error"}, 1},
		{"bpfarm_blob_operations_total", map[string]string{"backend": "other", "op": "put", "result": "ok"}, 1},
		{"bpfarm_blob_operations_total", map[string]string{"backend": "local", "op": "get", "result": "ok"}, 1},
		{"bpfarm_blob_operations_total", map[string]string{"backend": "local", "op": "read", "result": "ok"}, 1},
		{"bpfarm_blob_operations_total", map[string]string{"backend": "local", "op": "stat", "result": "not_found"}, 1},
		{"bpfarm_blob_put_bytes_total", map[string]string{"backend": "local"}, float64(len(b))},
		{"bpfarm_blob_get_bytes_total", map[string]string{"backend": "local"}, float64(len(b))},
		{"bpfarm_blob_operation_duration_seconds", map[string]string{"backend": "local", "op": "put"}, 2},
		{"bpfarm_blob_operation_duration_seconds", map[string]string{"backend": "local", "op": "get"}, 1},
	} {
		if got := get(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// value returns a counter's value or a histogram's sample count.
func value(m *dto.Metric) float64 {
	if h := m.GetHistogram(); h != nil {
		return float64(h.GetSampleCount())
	}
	return m.GetCounter().GetValue()
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }
