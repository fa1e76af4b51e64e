// Package build runs bpfarm's build queue: a push stores the source bundle
// and queues one build per arch, unless a build with identical inputs
// exists (a cache hit); workers claim queued builds from SQLite, compile
// them in the sandbox, inspect the object and record the outcome.
//
// The queue lives in the database and builds are claimed with a lease
// (package queue), so it survives crashes: a build whose worker died is
// claimed again by any worker once its lease runs out. A build that fails
// for an infrastructure reason (storage, disk, a deadline, an internal
// error) is retried with backoff and never served as a cache hit; only
// successes and the source's own failures (kind user) are. Finishing a
// build queues its relocations (package relocate) in the same
// transaction.
package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/compile"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/internal/failpoint"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/queue"
	"github.com/bpfarm/bpfarm/server/quota"
	"github.com/bpfarm/bpfarm/server/store"
)

// Service is the build queue and its workers.
type Service struct {
	db       *store.DB
	blobs    blob.Store
	compiler *compile.Compiler
	log      *slog.Logger
	archive  *archive.Archive
	metrics  *metrics
	workers  int
	policy   queue.Policy

	quotas    *quota.Service
	maxObject int64
	jobHook   func(kind string, id int64)

	wake *queue.Waker
}

// Config configures a Service.
type Config struct {
	DB       *store.DB
	Blobs    blob.Store
	Compiler *compile.Compiler
	Workers  int // concurrent compiles; at least 1
	// Archive is the BTF archive (per-kernel builds); nil turns per-kernel
	// builds off.
	Archive *archive.Archive
	// Policy holds the leases' and retries' terms.
	Policy   queue.Policy
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Quotas enforces per-token limits on pushes and build outputs; nil:
	// no limits.
	Quotas *quota.Service
	// MaxObjectSize bounds a compiled object (the server's
	// --max-object-size); 0: DefaultMaxObjectSize.
	MaxObjectSize int64
	// JobHook, when set, runs at the start of every build ("build") with
	// its id: tests inject panics with it.
	JobHook func(kind string, id int64)
}

// DefaultMaxObjectSize is the default limit of a compiled object's size.
const DefaultMaxObjectSize = 16 << 20

// New returns a Service; call Run to start its workers.
func New(cfg Config) *Service {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxObjectSize <= 0 {
		cfg.MaxObjectSize = DefaultMaxObjectSize
	}
	s := &Service{db: cfg.DB, blobs: cfg.Blobs, compiler: cfg.Compiler, log: cfg.Logger,
		archive: cfg.Archive, workers: cfg.Workers, policy: cfg.Policy.Defaults(),
		wake: queue.NewWaker(cfg.DB, store.TopicBuildQueued), quotas: cfg.Quotas, maxObject: cfg.MaxObjectSize,
		jobHook: cfg.JobHook}
	s.metrics = newMetrics(cfg.Registry, cfg.DB)
	return s
}

// Run runs the workers until ctx is done. Builds running at that moment
// are given back to the queue.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, i)
		}()
	}
	s.kick()
	wg.Wait()
	return nil
}

// kick wakes an idle build worker, in this process or another.
func (s *Service) kick() { s.db.Notify(context.Background(), store.TopicBuildQueued) }

// changed announces a change of a build's or a relocation's state to
// every process.
func (s *Service) changed() { s.db.Notify(context.Background(), store.TopicBuilds) }

// relocationsQueued wakes the relocation workers (package relocate) of
// every process.
func (s *Service) relocationsQueued() {
	s.db.Notify(context.Background(), store.TopicArtifactQueued)
}

func (s *Service) worker(ctx context.Context, n int) {
	w := &queue.Worker[*store.Job]{Name: "build", Queue: store.QueueBuilds, DB: s.db, Owner: queue.Owner("build", n),
		Policy: s.policy, Log: s.log.With("worker", n), Wake: s.wake, Claim: s.db.Claim,
		Lease:   func(j *store.Job) store.Lease { return j.Lease },
		Expired: func(j *store.Job) bool { return j.Expired },
	}
	w.Run = func(ctx context.Context, job *store.Job) { s.run(ctx, w, job) }
	w.Panicked = func(ctx context.Context, job *store.Job, err error) {
		out := store.Outcome{State: api.StateFailed, ErrorKind: store.ErrorKindInfra, Error: err.Error()}
		if s.compiler != nil {
			out.Compiler = s.compiler.Version()
		}
		s.record(ctx, w, job, out, time.Now())
	}
	w.Loop(ctx)
}

// run executes one claimed build and records its outcome.
func (s *Service) run(ctx context.Context, w *queue.Worker[*store.Job], job *store.Job) {
	log := w.Log.With("build", job.ID, "program", job.Program, "revision", short(job.Revision), "arch", job.Arch)
	log.Info("build started", "attempt", job.Attempts)
	s.changed()
	if s.jobHook != nil {
		s.jobHook("build", job.ID)
	}
	failpoint.Hit("build/claimed")
	start := time.Now()
	out := s.execute(ctx, job)
	if ctx.Err() != nil {
		// Shutting down (the build is given back to the queue) or the
		// lease is lost (another worker has it).
		log.Info("build interrupted", "cause", context.Cause(ctx))
		return
	}
	failpoint.Hit("build/before-finish")
	s.record(ctx, w, job, out, start)
}

// record records a build's outcome: an infrastructure failure goes back
// to the queue with backoff until its attempts run out; anything else is
// final and, for a success, queues its relocations in the same
// transaction.
func (s *Service) record(ctx context.Context, w *queue.Worker[*store.Job], job *store.Job, out store.Outcome, start time.Time) {
	ctx = context.WithoutCancel(ctx)
	log := w.Log.With("build", job.ID)
	defer s.changed()
	if out.State == api.StateFailed && out.ErrorKind == store.ErrorKindInfra {
		retried, err := w.Fail(ctx, job.Lease, job.Attempts, errors.New(out.Error))
		if err != nil {
			log.Error("retry build", "err", err)
			return
		}
		if retried {
			s.metrics.builds.WithLabelValues("retried").Inc()
			return
		}
		out.Error = queue.GiveUpReason(job.Attempts, errors.New(out.Error))
	}
	queued, err := s.db.Finish(ctx, job.Lease, out)
	if err != nil {
		log.Error("record build outcome", "err", err)
		return
	}
	failpoint.Hit("build/finished")
	d := time.Since(start)
	result := out.State
	if out.State == api.StateFailed {
		result = "failed_" + out.ErrorKind
	}
	s.metrics.builds.WithLabelValues(result).Inc()
	s.metrics.duration.WithLabelValues(result).Observe(d.Seconds())
	log.Info("build finished", "state", out.State, "error", out.Error, "duration", d, "pch", out.UsedPCH,
		"relocations_queued", queued)
	if queued > 0 {
		s.relocationsQueued()
	}
}

func (s *Service) execute(ctx context.Context, job *store.Job) store.Outcome {
	fail := func(kind fault.Kind, err error) store.Outcome {
		return store.Outcome{State: api.StateFailed, ErrorKind: string(kind), Error: err.Error(), Compiler: s.compiler.Version()}
	}
	// The farm's own failures: retried, never cached.
	infra := func(err error) store.Outcome { return fail(fault.Infra, err) }
	d, err := blob.ParseDigest(job.BundleBlob)
	if err != nil {
		return infra(fmt.Errorf("bundle blob: %w", err))
	}
	rc, err := s.blobs.Get(ctx, d)
	if err != nil {
		return infra(fmt.Errorf("read source bundle: %w", err))
	}
	bundle, err := bpfsrc.ReadTarGz(rc, job.Entry, bpfsrc.DefaultLimits)
	rc.Close()
	if err != nil {
		return infra(fmt.Errorf("read source bundle: %w", err))
	}
	req := compile.Request{Bundle: bundle, Arch: job.Arch, Flags: job.Flags}
	if req.Libbpf, err = s.libbpfSet(ctx, job.HeaderSet); err != nil {
		return infra(err)
	}
	if job.KernelID != 0 {
		k, err := s.db.KernelByID(ctx, job.KernelID)
		if err != nil {
			return infra(err)
		}
		if req.Kernel, err = s.archive.Target(ctx, k); err != nil {
			return infra(err)
		}
	}
	res, err := s.compiler.Compile(ctx, req)
	var cerr *compile.Error
	if errors.As(err, &cerr) {
		// The source's fault, unless the farm failed under the compiler
		// (a full disk, a deadline).
		out := fail(fault.Classify(err), err)
		out.Diagnostics = cerr.Diagnostics
		out.LogBlob = s.putLog(ctx, job, nil, cerr.Log, err)
		return out
	}
	if err != nil {
		return infra(err)
	}
	out := store.Outcome{Compiler: s.compiler.Version(), Diagnostics: res.Diagnostics, UsedPCH: res.UsedPCH}
	obj, err := inspect.Inspect(res.Object)
	if err == nil {
		err = obj.Check()
	}
	if err != nil {
		o := fail(fault.User, err)
		o.Diagnostics, o.UsedPCH, o.Inspection = res.Diagnostics, res.UsedPCH, obj
		o.LogBlob = s.putLog(ctx, job, res, res.Log, err)
		return o
	}
	if err := s.checkObject(ctx, job, int64(len(res.Object))); err != nil {
		var qe *quota.Error
		if !errors.As(err, &qe) {
			return infra(fmt.Errorf("check quota: %w", err))
		}
		o := fail(fault.User, err)
		o.Diagnostics, o.UsedPCH, o.Inspection = res.Diagnostics, res.UsedPCH, obj
		o.LogBlob = s.putLog(ctx, job, res, res.Log, err)
		return o
	}
	if err := failpoint.Error("build/store-object"); err != nil {
		return infra(fault.Wrap(fault.ErrStorageUnavailable, err))
	}
	od, err := blob.PutBytes(ctx, s.blobs, res.Object)
	if err != nil {
		return infra(fmt.Errorf("store object: %w", err))
	}
	out.State = api.StateSucceeded
	out.Inspection = obj
	out.ObjectBlob, out.ObjectSize = od.String(), int64(len(res.Object))
	out.LogBlob = s.putLog(ctx, job, res, res.Log, nil)
	return out
}

// checkObject refuses an object over the server's size limit or over its
// pusher's byte quota: it is not stored.
func (s *Service) checkObject(ctx context.Context, job *store.Job, size int64) error {
	if size > s.maxObject {
		return &quota.Error{Limit: quota.LimitObjectSizeFlag, Have: size, Max: s.maxObject}
	}
	if s.quotas != nil && job.PushedBy != "" {
		return s.quotas.CheckStore(ctx, job.PushedBy, size)
	}
	return nil
}

// putLog stores the build log: the command, the compiler's output and the
// outcome. A failure to store it is logged, not fatal.
func (s *Service) putLog(ctx context.Context, job *store.Job, res *compile.Result, text string, failure error) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "build %d: %s@%s for %s\n", job.ID, job.Program, short(job.Revision), job.Arch)
	fmt.Fprintf(&b, "compiler: %s\n", s.compiler.Version())
	if res != nil {
		fmt.Fprintf(&b, "command: %s\n", strings.Join(res.Command, " "))
		fmt.Fprintf(&b, "duration: %s (precompiled vmlinux.h: %v)\n", res.Duration.Round(time.Millisecond), res.UsedPCH)
	}
	if text != "" {
		b.WriteString("\n")
		b.WriteString(text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteString("\n")
		}
	}
	if failure != nil {
		fmt.Fprintf(&b, "\nFAILED: %v\n", failure)
	} else {
		b.WriteString("\nOK\n")
	}
	d, err := blob.PutBytes(ctx, s.blobs, b.Bytes())
	if err != nil {
		s.log.Error("store build log", "build", job.ID, "err", err)
		return ""
	}
	return d.String()
}

// PushRequest is one push of a source bundle.
type PushRequest struct {
	Program  string
	Bundle   *bpfsrc.Bundle
	Arches   []string // default: x86_64
	Flags    []string
	PushedBy string
	// PerKernel compiles the sources against each kernel's own vmlinux.h
	// and LINUX_VERSION_CODE, one build per kernel of each arch (for
	// sources that are not CO-RE).
	PerKernel bool
	// Headers names the libbpf header set: "" is the newest imported
	// one (the built-in one when none is), "builtin" the built-in one.
	Headers string
}

var programNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidProgramName checks a program name.
func ValidProgramName(name string) error {
	if !programNameRE.MatchString(name) {
		return fmt.Errorf("program name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// InputError is a push refused for its input (a 4xx).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Push stores a bundle as a revision of a program and ensures a build per
// arch, queueing compiles only for inputs never built before.
func (s *Service) Push(ctx context.Context, req PushRequest) (api.PushResult, error) {
	var res api.PushResult
	if err := ValidProgramName(req.Program); err != nil {
		return res, &InputError{err}
	}
	if err := compile.ValidateFlags(req.Flags); err != nil {
		return res, &InputError{err}
	}
	if len(req.Arches) == 0 {
		req.Arches = []string{"x86_64"}
	}
	// Arch aliases (aarch64, amd64) name the canonical arch.
	arches := make([]string, 0, len(req.Arches))
	for _, a := range req.Arches {
		c, err := kernel.NormalizeArch(a)
		if err != nil || !slices.Contains(api.Arches, c) {
			return res, &InputError{fmt.Errorf("arch %q: want one of %s", a, strings.Join(api.Arches, ", "))}
		}
		arches = append(arches, c)
	}
	slices.Sort(arches)
	req.Arches = slices.Compact(arches)
	inputs, err := s.buildInputs(ctx, req)
	if err != nil {
		return res, err
	}
	var tgz bytes.Buffer
	if err := req.Bundle.WriteTarGz(&tgz); err != nil {
		return res, fmt.Errorf("encode bundle: %w", err)
	}
	if s.quotas != nil {
		// A revision pushed before stores and builds nothing new.
		_, _, _, err := s.db.RevisionBlob(ctx, req.Program, req.Bundle.Digest())
		switch {
		case errors.Is(err, store.ErrNotFound):
			if err := s.quotas.CheckPush(ctx, req.PushedBy, req.Bundle.Size(), len(inputs)); err != nil {
				return res, err
			}
		case err != nil:
			return res, err
		}
	}
	bd, err := blob.PutBytes(ctx, s.blobs, tgz.Bytes())
	if err != nil {
		return res, fmt.Errorf("store bundle: %w", err)
	}
	failpoint.Hit("push/bundle-stored")
	res.Program, res.Revision = req.Program, req.Bundle.Digest()
	res.Created, err = s.db.AddRevision(ctx, store.RevisionInput{Program: req.Program, Digest: res.Revision,
		Entry: req.Bundle.Entry, BundleBlob: bd.String(), Size: req.Bundle.Size(), Files: len(req.Bundle.Files),
		PushedBy: req.PushedBy})
	if err != nil {
		return res, err
	}
	failpoint.Hit("push/revision-added")
	for _, in := range inputs {
		in.Program, in.Revision = req.Program, res.Revision
		b, queued, err := s.db.EnsureBuild(ctx, in)
		if err != nil {
			return res, err
		}
		failpoint.Hit("push/build-ensured")
		if queued {
			s.kick()
		} else {
			s.metrics.cacheHits.Inc()
			s.relocationsQueued() // a copied success queued its relocations
		}
		res.Builds = append(res.Builds, b)
	}
	return res, nil
}

// buildInputs lists the builds a push asks for, with their cache keys: one
// per arch, or with PerKernel one per kernel of each arch.
func (s *Service) buildInputs(ctx context.Context, req PushRequest) ([]store.BuildInput, error) {
	var out []store.BuildInput
	setName, err := s.resolveHeaderSet(ctx, req.Headers)
	if err != nil {
		return nil, err
	}
	set, err := s.libbpfSet(ctx, setName)
	if err != nil {
		return nil, err
	}
	for _, a := range req.Arches {
		fp, err := s.compiler.FingerprintWith(ctx, a, set)
		if err != nil && !req.PerKernel {
			if fault.IsInfra(err) {
				// The farm's failure (a full disk writing vmlinux.h,
				// storage reading the kernel): not the request's.
				return nil, fmt.Errorf("arch %s: %w", a, err)
			}
			return nil, &InputError{fmt.Errorf("arch %s: %w", a, err)}
		}
		if !req.PerKernel {
			out = append(out, store.BuildInput{Arch: a, Flags: req.Flags, HeaderSet: setName,
				CacheKey: cacheKey(req.Bundle, a, req.Flags, fp)})
			continue
		}
		if s.archive == nil {
			return nil, &InputError{errors.New("per-kernel builds need the BTF archive")}
		}
		ks, err := s.db.Kernels(ctx, a)
		if err != nil {
			return nil, err
		}
		if len(ks) == 0 {
			return nil, &InputError{fmt.Errorf("per-kernel build for %s: the archive holds no %s kernel (import some with bpfarm kernels import)", a, a)}
		}
		for _, k := range ks {
			t, err := s.archive.Target(ctx, k)
			if err != nil {
				return nil, err
			}
			out = append(out, store.BuildInput{Arch: a, Flags: req.Flags, KernelID: k.ID, HeaderSet: setName,
				CacheKey: cacheKey(req.Bundle, a, req.Flags, fp+"\x00kernel "+t.Digest)})
		}
	}
	return out, nil
}

// cacheKey hashes every input of a compile.
func cacheKey(b *bpfsrc.Bundle, arch string, flags []string, fingerprint string) string {
	in, _ := json.Marshal(struct {
		Bundle, Entry, Arch, Compiler string
		Flags                         []string
	}{b.Digest(), b.Entry, arch, fingerprint, flags})
	h := sha256.Sum256(in)
	return hex.EncodeToString(h[:])
}

// Wait returns the build once it is done, or as it is when ctx ends
// (a long poll).
func (s *Service) Wait(ctx context.Context, id int64) (api.Build, error) {
	for {
		ch := s.Changed()
		b, err := s.db.Build(ctx, id)
		if err != nil || b.Done() {
			return b, err
		}
		select {
		case <-ctx.Done():
			return b, nil
		case <-ch:
		}
	}
}

// Changed returns a channel closed at the next change of a build's or a
// relocation's state (a new revision's artifact done for a kernel, ...):
// long polls subscribe, then re-read what they watch.
// Changes made by other processes sharing the database count too.
func (s *Service) Changed() <-chan struct{} { return s.db.Changed(store.TopicBuilds) }

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
