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
}

func newMetrics(reg prometheus.Registerer, db *store.DB) *metrics {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_builds_total",
			Help: "Builds finished, by result (succeeded, failed_user, failed_infra), and retried after an infrastructure failure (retried).",
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
	if reg == nil {
		return m
	}
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
