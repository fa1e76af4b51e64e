package verify

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/server/store"
)

type metrics struct {
	verifications *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	boot          prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, db *store.DB) *metrics {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_verifications_total",
			Help: "Artifacts verified on their real kernel in a VM, by result (verified, rejected, kernel-error, timeout, runner-error, skipped, error).",
		}, []string{"result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bpfarm_verification_duration_seconds",
			Help:    "Wall time of one verification (initramfs, VM boot, loads, power-off), by result.",
			Buckets: []float64{.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120},
		}, []string{"result"}),
		boot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bpfarm_verification_boot_seconds",
			Help:    "Wall time from starting a verifier VM to the verifier's first answer on its console.",
			Buckets: []float64{.25, .5, 1, 2, 3, 4, 5, 7.5, 10, 20, 30},
		}),
	}
	if reg == nil {
		return m
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bpfarm_verification_queue_depth",
		Help: "Verifications queued or running.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		states, _, _ := db.VerificationCounts(ctx)
		return float64(states["queued"] + states["running"])
	})
	reg.MustRegister(m.verifications, m.duration, m.boot, pending)
	return m
}
