package build

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/server/store"
)

type metrics struct {
	builds    *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	cacheHits prometheus.Counter

	relocations        *prometheus.CounterVec
	relocationDuration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, db *store.DB) *metrics {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_builds_total",
			Help: "Builds finished, by result (succeeded, failed_user, failed_internal).",
		}, []string{"result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bpfarm_build_duration_seconds",
			Help:    "Wall time of a build (compile, inspection, storage), by result.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 120},
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bpfarm_build_cache_hits_total",
			Help: "Pushed builds answered from an identical earlier build, without compiling.",
		}),
	}
	m.relocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpfarm_relocations_total",
		Help: "Per-kernel relocations (artifacts) finished, by status (ok, poisoned, unsupported, failed, error).",
	}, []string{"status"})
	m.relocationDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bpfarm_relocation_duration_seconds",
		Help:    "Wall time of one artifact: relocation, minimized BTF, pre-relocated object, manifest, storage.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	})
	if reg == nil {
		return m
	}
	reg.MustRegister(m.relocations, m.relocationDuration)
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bpfarm_build_queue_depth",
		Help: "Builds queued and not yet running.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		q, _, _ := db.QueueDepth(ctx)
		return float64(q)
	})
	running := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bpfarm_builds_running",
		Help: "Builds running now.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, r, _ := db.QueueDepth(ctx)
		return float64(r)
	})
	reg.MustRegister(m.builds, m.duration, m.cacheHits, queue, running)
	return m
}
