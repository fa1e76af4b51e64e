// Package relocate runs the server's relocation queue: every succeeded
// build is relocated for every kernel of its arch into an artifact —
// relocation report, minimized BTF, pre-relocated object and a signed
// manifest. Relocations are jobs of the store claimed with a lease
// (package queue), beside builds (package build) and verifications
// (package verify); the transactions that finish a build or import a
// kernel queue them.
package relocate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/btf/core"
	"github.com/bpfarm/bpfarm/internal/failpoint"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/lease"
	"github.com/bpfarm/bpfarm/server/queue"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

// maxObjectSize bounds a compiled object read back for relocation.
const maxObjectSize = 64 << 20

// Config configures a Service.
type Config struct {
	DB      *store.DB
	Blobs   blob.Store
	Archive *archive.Archive
	// Key signs artifact manifests.
	Key *signing.Key
	// Workers is the number of concurrent relocations (default: cores).
	Workers int
	// Policy holds the leases' and retries' terms.
	Policy   queue.Policy
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// JobHook, when set, runs at the start of every relocation with its
	// id ("artifact"): tests inject panics with it.
	JobHook func(kind string, id int64)
	// SweepInterval is how often the sweeper queues relocations missing
	// from older data (default 5m; it also runs on start).
	SweepInterval time.Duration
}

// Service is the relocation queue's workers.
type Service struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	wake    *queue.Waker

	mu      sync.Mutex
	objects map[string]*core.Object // parsed objects by blob digest
	order   []string
}

// New returns a Service; Run starts its workers.
func New(cfg Config) *Service {
	if cfg.Workers < 1 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Policy = cfg.Policy.Defaults()
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 5 * time.Minute
	}
	return &Service{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registry), objects: map[string]*core.Object{},
		wake: queue.NewWaker(cfg.DB, store.TopicArtifactQueued)}
}

// Kick wakes an idle relocation worker, in this process or another (new
// relocations were queued).
func (s *Service) Kick() { s.cfg.DB.Notify(context.Background(), store.TopicArtifactQueued) }

// changed announces a finished relocation to every process (long polls
// on builds and artifacts).
func (s *Service) changed() { s.cfg.DB.Notify(context.Background(), store.TopicBuilds) }

// Run runs the workers and the sweeper until ctx is done; relocations
// running then are given back to the queue.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sweeper(ctx)
	}()
	for i := range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, i)
		}()
	}
	s.wake.Kick()
	wg.Wait()
}

// sweeper repairs, on start and then periodically, the fan-out that data
// written before jobs were committed with their state changes lacks: the
// relocations of succeeded builds (store.DB.QueueMissingArtifacts). A
// sweep scans every succeeded build against every kernel: the periodic one
// runs about once per SweepInterval across every worker process
// (lease.Every), one at a time (the lease "sweep-relocations"), not once
// per process. The sweep on start runs regardless (a restarted process
// repairs at once, even while a dead one's lease has not expired yet); it
// is idempotent, as every sweep.
func (s *Service) sweeper(ctx context.Context) {
	sweep := func(ctx context.Context) error {
		n, err := s.cfg.DB.QueueMissingArtifacts(ctx)
		if n > 0 {
			s.log.Warn("sweeper queued missing relocations", "relocations", n)
			s.metrics.swept.Add(float64(n))
			s.Kick()
		}
		return err
	}
	if err := sweep(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("sweep relocations", "err", err)
	}
	lease.Every(ctx, s.cfg.DB, s.log, "sweep-relocations", s.cfg.SweepInterval, func(ctx context.Context) {
		err := lease.Do(ctx, s.cfg.DB, "sweep-relocations", lease.DefaultTTL, sweep)
		switch {
		case errors.Is(err, lease.ErrHeld):
			s.log.Debug("sweep skipped: another process sweeps")
		case err != nil && ctx.Err() == nil:
			s.log.Error("sweep relocations", "err", err)
		}
	})
}

// worker claims and runs relocations until ctx is done, preferring
// relocations for the kernel whose BTF it parsed last.
func (s *Service) worker(ctx context.Context, n int) {
	lastBTF := ""
	w := &queue.Worker[*store.ArtifactJob]{Name: "artifact", Queue: store.QueueArtifacts, DB: s.cfg.DB,
		Owner: queue.Owner("artifact", n), Policy: s.cfg.Policy, Log: s.log.With("relocator", n), Wake: s.wake,
		Claim: func(ctx context.Context, o store.ClaimOptions) (*store.ArtifactJob, error) {
			return s.cfg.DB.ClaimArtifact(ctx, o, lastBTF)
		},
		Lease:   func(j *store.ArtifactJob) store.Lease { return j.Lease },
		Expired: func(j *store.ArtifactJob) bool { return j.Expired },
	}
	w.Run = func(ctx context.Context, job *store.ArtifactJob) {
		lastBTF = job.Kernel.BTFBlob
		s.relocate(ctx, w, job)
	}
	w.Panicked = func(ctx context.Context, job *store.ArtifactJob, err error) { s.failed(ctx, w, job, err) }
	w.Loop(ctx)
}

func (s *Service) relocate(ctx context.Context, w *queue.Worker[*store.ArtifactJob], job *store.ArtifactJob) {
	log := w.Log.With("artifact", job.ID, "build", job.Build.ID, "kernel", job.Kernel.KID)
	if s.cfg.JobHook != nil {
		s.cfg.JobHook("artifact", job.ID)
	}
	failpoint.Hit("relocate/claimed")
	start := time.Now()
	out, err := s.artifact(ctx, job)
	if ctx.Err() != nil {
		log.Info("relocation interrupted", "cause", context.Cause(ctx))
		return
	}
	if err != nil {
		s.failed(ctx, w, job, err)
		return
	}
	failpoint.Hit("relocate/before-finish")
	if err := s.cfg.DB.FinishArtifact(context.WithoutCancel(ctx), job.Lease, out); err != nil {
		log.Error("record artifact", "err", err)
		return
	}
	failpoint.Hit("relocate/finished")
	s.metrics.relocations.WithLabelValues(out.Status).Inc()
	s.metrics.duration.Observe(time.Since(start).Seconds())
	log.Debug("relocated", "program", job.Build.Program, "status", out.Status, "duration", time.Since(start))
	s.changed()
}

// failed records a relocation that failed: an infrastructure failure is
// retried with backoff until its attempts run out; any other failure (or
// the last attempt) is recorded as the artifact's error.
func (s *Service) failed(ctx context.Context, w *queue.Worker[*store.ArtifactJob], job *store.ArtifactJob, err error) {
	ctx = context.WithoutCancel(ctx)
	msg := err.Error()
	if fault.IsInfra(err) {
		retried, rerr := w.Fail(ctx, job.Lease, job.Attempts, err)
		if rerr != nil {
			w.Log.Error("retry artifact", "artifact", job.ID, "err", rerr)
			return
		}
		if retried {
			s.changed()
			return
		}
		msg = queue.GiveUpReason(job.Attempts, err)
	}
	w.Log.Error("relocation failed", "artifact", job.ID, "build", job.Build.ID, "kernel", job.Kernel.KID, "err", msg)
	s.metrics.relocations.WithLabelValues("error").Inc()
	if err := s.cfg.DB.FinishArtifact(ctx, job.Lease, store.ArtifactOutcome{Error: msg}); err != nil {
		w.Log.Error("record artifact", "artifact", job.ID, "err", err)
	}
	s.changed()
}

func (r *Service) object(ctx context.Context, digest string) (*core.Object, []byte, error) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return nil, nil, err
	}
	raw, err := blob.ReadAll(ctx, r.cfg.Blobs, d, maxObjectSize)
	if err != nil {
		return nil, nil, fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("read object: %w", err))
	}
	r.mu.Lock()
	o, ok := r.objects[digest]
	r.mu.Unlock()
	if ok {
		return o, raw, nil
	}
	if o, err = core.LoadObject(raw); err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	if _, ok := r.objects[digest]; !ok {
		r.objects[digest] = o
		r.order = append(r.order, digest)
		if len(r.order) > 32 {
			delete(r.objects, r.order[0])
			r.order = r.order[1:]
		}
	}
	r.mu.Unlock()
	return o, raw, nil
}

func (r *Service) artifact(ctx context.Context, job *store.ArtifactJob) (store.ArtifactOutcome, error) {
	var out store.ArtifactOutcome
	b := job.Build
	if b.Object == nil {
		return out, fault.Wrap(fault.ErrInternal, fmt.Errorf("build %d has no object", b.ID))
	}
	obj, raw, err := r.object(ctx, b.Object.Digest)
	if err != nil {
		return out, err
	}
	k, err := r.cfg.Archive.Parsed(ctx, job.Kernel)
	if err != nil {
		return out, fault.Wrap(fault.ErrInternal, fmt.Errorf("kernel %s: %w", job.Kernel.KID, err))
	}
	res, err := obj.Relocate(k)
	if err != nil {
		return out, fmt.Errorf("relocate for %s: %w", job.Kernel.KID, err)
	}
	report := reportOf(res.Report)
	report.Kernel = job.Kernel.KID
	out.Report = &report
	out.Status = overall(report)
	minD, err := blob.PutBytes(ctx, r.cfg.Blobs, res.MinBTF)
	if err != nil {
		return out, fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("store minimized BTF: %w", err))
	}
	relD, err := blob.PutBytes(ctx, r.cfg.Blobs, res.Relocated)
	if err != nil {
		return out, fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("store relocated object: %w", err))
	}
	out.MinBTFBlob, out.MinBTFSize = minD.String(), int64(len(res.MinBTF))
	out.RelocatedBlob, out.RelocatedSize = relD.String(), int64(len(res.Relocated))

	m := &manifest.Manifest{
		Version: manifest.Version, Program: b.Program, Revision: b.Revision, BuildID: b.ID, Arch: b.Arch,
		Kernel: job.Kernel.KID, KernelBTF: job.Kernel.BTFBlob, Compiler: b.Compiler, Flags: nonNilStrings(b.Flags), PerKernel: job.PerKernel,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
		Files: map[string]manifest.File{
			manifest.FileObject:    {Name: b.Program + ".bpf.o", SHA256: b.Object.Digest, Size: int64(len(raw))},
			manifest.FileMinBTF:    {Name: b.Program + ".min.btf", SHA256: minD.String(), Size: out.MinBTFSize},
			manifest.FileRelocated: {Name: b.Program + ".relocated.bpf.o", SHA256: relD.String(), Size: out.RelocatedSize},
		},
		Status: out.Status,
		Report: report,
	}
	md, err := r.cfg.Key.SignAndStore(ctx, r.cfg.Blobs, m)
	if err != nil {
		return out, fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("manifest: %w", err))
	}
	out.ManifestBlob = md
	return out, nil
}

// reportOf converts the CO-RE engine's report into the manifest's.
func reportOf(r core.Report) manifest.Report {
	out := manifest.Report{Kernel: r.Kernel, Programs: []manifest.ProgramReport{}}
	for _, p := range r.Programs {
		pr := manifest.ProgramReport{Name: p.Name, Section: p.Section, Status: p.Status, Error: p.Error,
			Reason: p.Reason, Relocations: p.Relocations}
		for _, n := range p.Needs {
			pr.Needs = append(pr.Needs, manifest.Need{Kind: n.Kind, Name: n.Name, Map: n.Map, Status: n.Status})
		}
		for _, x := range p.Poisoned {
			pr.Poisoned = append(pr.Poisoned, manifest.Poison{Kind: x.Kind, Path: x.Path, Instruction: x.Instruction, Guarded: x.Guarded})
		}
		for _, t := range p.Targets {
			pr.Targets = append(pr.Targets, manifest.Target{Kind: t.Kind, Name: t.Name, Status: t.Status})
		}
		out.Programs = append(out.Programs, pr)
	}
	return out
}

// overall summarises a report: failed if any program failed, else
// unsupported if any is unsupported, else poisoned if any was poisoned,
// else ok (the precedence of program statuses, core.Status*).
func overall(r manifest.Report) string {
	status := manifest.StatusOK
	for _, p := range r.Programs {
		switch p.Status {
		case manifest.StatusFailed:
			return manifest.StatusFailed
		case manifest.StatusUnsupported:
			status = manifest.StatusUnsupported
		case manifest.StatusPoisoned:
			if status == manifest.StatusOK {
				status = manifest.StatusPoisoned
			}
		}
	}
	return status
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
