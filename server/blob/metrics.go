package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/server/fault"
)

// WithMetrics returns a Store that records Prometheus metrics about its use
// of s, labelled with backend (e.g. "local", "s3"):
//
//   - bpfarm_blob_operations_total{backend,op,result}: operations by op
//     ("put", "get", "stat", and "read" for the end of a Get's reader, counted
//     at Close, "delete", "list", "check") and result ("ok", "not_found",
//     "digest_mismatch", "no_space", "deadline", "unavailable" (see
//     server/fault), "canceled", "error").
//   - bpfarm_blob_put_bytes_total{backend}: bytes Put read from its callers.
//   - bpfarm_blob_get_bytes_total{backend}: bytes read from Get's readers.
//   - bpfarm_blob_operation_duration_seconds{backend,op}: latency of put,
//     get (until the blob is open) and stat.
//
// Several stores may be wrapped with the same Registerer, with different
// backend labels: the collectors are registered once and shared. A nil reg
// registers nothing. WithMetrics panics if reg holds different collectors
// with the same names, like prometheus.MustRegister.
func WithMetrics(s Store, reg prometheus.Registerer, backend string) Store {
	m := newMetricVecs(reg)
	return &metered{
		s:        s,
		ops:      m.ops.MustCurryWith(prometheus.Labels{"backend": backend}),
		putBytes: m.putBytes.WithLabelValues(backend),
		getBytes: m.getBytes.WithLabelValues(backend),
		latency:  m.latency.MustCurryWith(prometheus.Labels{"backend": backend}),
	}
}

type metricVecs struct {
	ops      *prometheus.CounterVec
	putBytes *prometheus.CounterVec
	getBytes *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetricVecs(reg prometheus.Registerer) metricVecs {
	m := metricVecs{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_blob_operations_total",
			Help: "Blob store operations, by backend, operation and result.",
		}, []string{"backend", "op", "result"}),
		putBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_blob_put_bytes_total",
			Help: "Bytes read by blob store Puts from their callers.",
		}, []string{"backend"}),
		getBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_blob_get_bytes_total",
			Help: "Bytes read by callers from blob store Gets.",
		}, []string{"backend"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bpfarm_blob_operation_duration_seconds",
			Help:    "Latency of blob store operations (for get: until the blob is open).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12), // 0.5ms to ~12s
		}, []string{"backend", "op"}),
	}
	if reg == nil {
		return m
	}
	m.ops = register(reg, m.ops)
	m.putBytes = register(reg, m.putBytes)
	m.getBytes = register(reg, m.getBytes)
	m.latency = register(reg, m.latency)
	return m
}

// register registers c with reg, or returns the equivalent collector
// already registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("blob metrics: %v", err))
}

type metered struct {
	s        Store
	ops      *prometheus.CounterVec // curried with backend: op, result
	putBytes prometheus.Counter
	getBytes prometheus.Counter
	latency  prometheus.ObserverVec // curried with backend: op
}

func (m *metered) observe(op string, start time.Time, err error) {
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	m.ops.WithLabelValues(op, resultOf(err)).Inc()
}

// Put implements Store.
func (m *metered) Put(ctx context.Context, r io.Reader, size int64, want Digest) (Info, error) {
	start := time.Now()
	info, err := m.s.Put(ctx, &countingReader{r: r, c: m.putBytes}, size, want)
	m.observe("put", start, err)
	return info, err
}

// Get implements Store.
func (m *metered) Get(ctx context.Context, d Digest) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := m.s.Get(ctx, d)
	m.observe("get", start, err)
	if err != nil {
		return nil, err
	}
	return &meteredReader{rc: rc, m: m}, nil
}

// Stat implements Store.
func (m *metered) Stat(ctx context.Context, d Digest) (Info, error) {
	start := time.Now()
	info, err := m.s.Stat(ctx, d)
	m.observe("stat", start, err)
	return info, err
}

// Delete implements Store.
func (m *metered) Delete(ctx context.Context, d Digest) error {
	start := time.Now()
	err := m.s.Delete(ctx, d)
	m.observe("delete", start, err)
	return err
}

// List implements Store.
func (m *metered) List(ctx context.Context, fn func(Entry) error) error {
	start := time.Now()
	err := m.s.List(ctx, fn)
	m.observe("list", start, err)
	return err
}

// Check implements Store.
func (m *metered) Check(ctx context.Context) error {
	start := time.Now()
	err := m.s.Check(ctx)
	m.observe("check", start, err)
	return err
}

// resultOf classifies an operation's error for the result label.
func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrDigestMismatch):
		return "digest_mismatch"
	case errors.Is(err, fault.ErrNoSpace), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "no_space"
	case errors.Is(err, fault.ErrDeadline):
		return "deadline"
	case errors.Is(err, fault.ErrStorageUnavailable):
		return "unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	default:
		return "error"
	}
}

// countingReader counts the bytes read into a counter.
type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.c.Add(float64(n))
	}
	return n, err
}

// meteredReader counts the bytes read from a Get and, at Close, records a
// "read" operation with the first error seen other than io.EOF.
type meteredReader struct {
	rc     io.ReadCloser
	m      *metered
	err    error
	closed bool
}

func (r *meteredReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.m.getBytes.Add(float64(n))
	}
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func (r *meteredReader) Close() error {
	err := r.rc.Close()
	if !r.closed {
		r.closed = true
		r.m.ops.WithLabelValues("read", resultOf(r.err)).Inc()
	}
	return err
}
