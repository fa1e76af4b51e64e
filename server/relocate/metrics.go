package relocate

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	relocations *prometheus.CounterVec
	duration    prometheus.Histogram
	swept       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		relocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_relocations_total",
			Help: "Per-kernel relocations (artifacts) finished, by status (ok, poisoned, unsupported, failed, error).",
		}, []string{"status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bpfarm_relocation_duration_seconds",
			Help:    "Wall time of one artifact: relocation, minimized BTF, pre-relocated object, manifest, storage.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bpfarm_relocations_swept_total",
			Help: "Relocations the sweeper found missing and queued (fan-out lost before jobs committed with their state).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.relocations, m.duration, m.swept)
	}
	return m
}
