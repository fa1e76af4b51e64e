// Package verify runs the server's verification queue: for every artifact
// (build × kernel) whose kernel has an image in the archive, a worker boots
// the kernel in a qemu VM with bpfarm-verifier as /init (package
// bpfarm/verify), records each program's verdict in SQLite, and re-signs
// the artifact's manifest with the verdicts in its "verified" field.
//
// The queue lives in the database like the build and relocation queues,
// over the same lease mechanism (package queue): finishing a relocation
// and importing a kernel queue verifications in their own transactions, a
// scanner repairs what is missing (on each relocation, and every few
// seconds), workers claim them with a lease, and a verification whose
// worker died is claimed again once its lease runs out. At most VMs VMs
// run at once.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/internal/failpoint"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/queue"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
	bpfverify "github.com/bpfarm/bpfarm/verify"
)

// Size bounds of what a verification reads back from the blob store.
const (
	maxObjectSize = 64 << 20
	maxImageSize  = 256 << 20
)

// Config configures a Service.
type Config struct {
	DB    *store.DB
	Blobs blob.Store
	// Key re-signs manifests with the verdicts.
	Key *signing.Key
	// Runner is the static bpfarm-verifier binary; empty turns
	// verification off.
	Runner string
	// VMs is the number of VMs run at once (default 1).
	VMs int
	// Timeout bounds one VM (default 60s under TCG, 30s under KVM).
	Timeout time.Duration
	// Memory is the VMs' memory (default 512M).
	Memory string
	// Accel is "kvm", "tcg" or "" (KVM when it works).
	Accel string
	// WorkDir holds kernel images and initramfs files.
	WorkDir string
	// Changed, when set, returns a channel closed at the next change of
	// relocations (build.Service.Changed): new artifacts to verify.
	Changed func() <-chan struct{}
	// Modes are the load modes (default: relocated and host-btf).
	Modes []string
	// Policy holds the leases' and retries' terms.
	Policy   queue.Policy
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service is the verification queue and its workers.
type Service struct {
	cfg     Config
	log     *slog.Logger
	runner  string // sha256 of the runner binary
	wake    *queue.Waker
	metrics *metrics

	imagesMu sync.Mutex
}

// New returns a Service; Run starts it. With no Runner it does nothing.
func New(cfg Config) (*Service, error) {
	if cfg.VMs < 1 {
		cfg.VMs = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, log: cfg.Logger, wake: queue.NewWaker(nil, "")}
	s.metrics = newMetrics(cfg.Registry, cfg.DB)
	if cfg.Runner == "" {
		return s, nil
	}
	f, err := os.Open(cfg.Runner)
	if err != nil {
		return nil, fmt.Errorf("verifier runner: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("verifier runner: %w", err)
	}
	s.runner = hex.EncodeToString(h.Sum(nil))
	os.RemoveAll(filepath.Join(cfg.WorkDir, "tmp")) // leftovers of a crash
	for _, d := range []string{"images", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.WorkDir, d), 0o750); err != nil {
			return nil, fmt.Errorf("verifier work directory: %w", err)
		}
	}
	return s, nil
}

// Enabled reports whether the service verifies (it has a runner).
func (s *Service) Enabled() bool { return s != nil && s.cfg.Runner != "" }

// Kick makes the verification scanners of every process sharing the
// database look for work now (a kernel got an image, an artifact was
// queued again).
func (s *Service) Kick() {
	if s == nil {
		return
	}
	s.cfg.DB.Notify(context.Background(), store.TopicVerifyQueued)
}

// Changed returns a channel closed at the next started or finished
// verification, in any process sharing the database.
func (s *Service) Changed() <-chan struct{} { return s.cfg.DB.Changed(store.TopicVerifications) }

// changed announces a started or finished verification.
func (s *Service) changed() { s.cfg.DB.Notify(context.Background(), store.TopicVerifications) }

// kickWorkers wakes an idle VM worker.
func (s *Service) kickWorkers() { s.wake.Kick() }

// Run recovers verifications interrupted by a crash, then queues and runs
// verifications until ctx is done. Verifications running at that moment
// are left "running" and queued again on the next start.
func (s *Service) Run(ctx context.Context) error {
	if !s.Enabled() {
		return nil
	}
	requeued, err := s.cfg.DB.RequeueSkipped(ctx)
	if err != nil {
		return err
	}
	if requeued > 0 {
		s.log.Info("skipped verifications queued again", "requeued", requeued)
	}
	s.log.Info("verifier ready", "runner", s.cfg.Runner, "vms", s.cfg.VMs, "accel", orAuto(s.cfg.Accel))
	var wg sync.WaitGroup
	for i := range s.cfg.VMs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, i)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.scanner(ctx)
	}()
	wg.Wait()
	return nil
}

func orAuto(s string) string {
	if s == "" {
		return "auto"
	}
	return s
}

// scanner queues verifications for new artifacts.
func (s *Service) scanner(ctx context.Context) {
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	for {
		var changed <-chan struct{}
		if s.cfg.Changed != nil {
			changed = s.cfg.Changed()
		}
		kicked := s.cfg.DB.Changed(store.TopicVerifyQueued)
		n, err := s.cfg.DB.QueueVerifications(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("queue verifications", "err", err)
		case n > 0:
			s.log.Info("verifications queued", "count", n)
		}
		s.kickWorkers()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-kicked:
		case <-poll.C:
		}
	}
}

func (s *Service) worker(ctx context.Context, n int) {
	w := &queue.Worker[*store.VerifyJob]{Name: "verification", Queue: store.QueueVerifications, DB: s.cfg.DB,
		Owner: queue.Owner("verification", n), Policy: s.cfg.Policy, Log: s.log.With("vm", n), Wake: s.wake,
		Claim:   s.cfg.DB.ClaimVerification,
		Lease:   func(j *store.VerifyJob) store.Lease { return j.Lease },
		Expired: func(j *store.VerifyJob) bool { return j.Expired },
	}
	w.Run = func(ctx context.Context, job *store.VerifyJob) { s.run(ctx, w, job) }
	w.Panicked = func(ctx context.Context, job *store.VerifyJob, err error) {
		s.record(ctx, w, job, store.VerifyOutcome{Error: err.Error()}, err, time.Now())
	}
	w.Loop(ctx)
}

// run executes one claimed verification and records its outcome.
func (s *Service) run(ctx context.Context, w *queue.Worker[*store.VerifyJob], job *store.VerifyJob) {
	a := job.Artifact
	log := w.Log.With("verification", job.ID, "program", a.Program, "revision", short(a.Revision), "kernel", a.Kernel)
	log.Info("verification started", "attempt", job.Attempts)
	s.changed()
	failpoint.Hit("verify/claimed")
	start := time.Now()
	out, cause := s.verify(ctx, log, job)
	if ctx.Err() != nil {
		log.Info("verification interrupted", "cause", context.Cause(ctx))
		return
	}
	failpoint.Hit("verify/before-finish")
	s.record(ctx, w, job, out, cause, start)
}

// record records a verification's outcome: a failure of the farm itself
// (cause an infrastructure fault) goes back to the queue with backoff
// until its attempts run out.
func (s *Service) record(ctx context.Context, w *queue.Worker[*store.VerifyJob], job *store.VerifyJob, out store.VerifyOutcome, cause error, start time.Time) {
	ctx = context.WithoutCancel(ctx)
	log := w.Log.With("verification", job.ID)
	defer s.changed()
	if cause != nil && fault.IsInfra(cause) {
		retried, err := w.Fail(ctx, job.Lease, job.Attempts, cause)
		if err != nil {
			log.Error("retry verification", "err", err)
			return
		}
		if retried {
			return
		}
		out.Error = queue.GiveUpReason(job.Attempts, cause)
	}
	if err := s.cfg.DB.FinishVerification(ctx, job.Lease, job.Artifact.ID, out); err != nil {
		log.Error("record verification", "err", err)
		return
	}
	result := out.Result
	if out.Error != "" {
		result = "error"
	}
	s.metrics.verifications.WithLabelValues(result).Inc()
	s.metrics.duration.WithLabelValues(result).Observe(time.Since(start).Seconds())
	if out.BootMS > 0 {
		s.metrics.boot.Observe(float64(out.BootMS) / 1000)
	}
	log.Info("verification finished", "result", result, "reason", firstOf(out.Reason, out.Error),
		"boot", time.Duration(out.BootMS)*time.Millisecond, "duration", time.Since(start).Round(time.Millisecond),
		"accel", out.Accel)
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// verify boots the kernel and loads the artifact; failures of the server
// itself are Outcome.Error, and the error returned (infrastructure faults
// among them are retried).
func (s *Service) verify(ctx context.Context, log *slog.Logger, job *store.VerifyJob) (store.VerifyOutcome, error) {
	a, k := job.Artifact, job.Kernel
	out := store.VerifyOutcome{KernelImage: k.ImageBlob, Runner: s.runner}
	fail := func(err error) (store.VerifyOutcome, error) {
		out.Error = err.Error()
		return out, err
	}
	if k.ImageBlob == "" {
		return fail(fmt.Errorf("kernel %s has no image", k.KID))
	}
	qemu, err := bpfverify.QemuFor(k.Arch)
	if errors.Is(err, bpfverify.ErrNoQemu) {
		out.Result, out.Reason = api.VerificationSkipped, err.Error()
		return out, nil
	}
	if err != nil {
		return fail(err)
	}
	runner, err := bpfverify.RunnerFor(s.cfg.Runner, k.Arch)
	if errors.Is(err, bpfverify.ErrNoRunner) {
		out.Result, out.Reason = api.VerificationSkipped, err.Error()
		return out, nil
	}
	if err != nil {
		return fail(err)
	}
	image, err := s.image(ctx, k.ImageBlob)
	if err != nil {
		return fail(fault.Wrap(fault.ErrStorageUnavailable, err))
	}
	read := func(b *api.Blob) ([]byte, error) {
		if b == nil || b.Digest == "" {
			return nil, nil
		}
		d, err := blob.ParseDigest(b.Digest)
		if err != nil {
			return nil, err
		}
		return blob.ReadAll(ctx, s.cfg.Blobs, d, maxObjectSize)
	}
	var obj, rel, minBTF []byte
	if obj, err = read(a.Object); err == nil {
		if rel, err = read(a.Relocated); err == nil {
			minBTF, err = read(a.MinBTF)
		}
	}
	if err != nil {
		return fail(fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("artifact files: %w", err)))
	}
	rep, err := bpfverify.Run(ctx, bpfverify.Request{Runner: runner, Image: image, Arch: k.Arch, Release: k.Release,
		Kernel: k.KID, Program: a.Program, Revision: a.Revision, Object: obj, Relocated: rel, MinBTF: minBTF,
		Modes: s.cfg.Modes, Qemu: qemu, Accel: s.cfg.Accel, Memory: s.cfg.Memory, Timeout: s.cfg.Timeout,
		TempDir: filepath.Join(s.cfg.WorkDir, "tmp")})
	if err != nil {
		return fail(fmt.Errorf("start VM: %w", err))
	}
	o := rep.Outcome
	out.Result, out.Reason, out.Accel = rep.Result, rep.Reason, o.Accel
	out.BootMS, out.DurationMS = o.Boot.Milliseconds(), o.Duration.Milliseconds()
	if rep.Info != nil {
		out.Release = rep.Info.Release
	}
	for _, p := range rep.Programs {
		out.Programs = append(out.Programs, api.ProgramVerification{Program: p.Program, Section: p.Section, Type: p.Type,
			Mode: p.Mode, Accepted: p.Accepted, Verifier: p.Verifier, Instructions: p.Instructions,
			LoadMS: float64(p.LoadNS) / 1e6, Error: p.Error, Log: p.Log})
	}
	if rep.Result != bpfverify.ResultVerified && rep.Result != bpfverify.ResultRejected {
		out.ConsoleTail = o.Tail
	}
	if len(o.Console) > 0 {
		if d, err := blob.PutBytes(ctx, s.cfg.Blobs, o.Console); err != nil {
			log.Warn("store VM console", "err", err)
		} else {
			out.ConsoleBlob = d.String()
		}
	}
	if a.Manifest != nil {
		// With no verdicts (the kernel did not get to load anything), the
		// manifest loses those of an earlier verification, if any.
		var verdicts map[string]bpfverify.Verdict
		if len(rep.Programs) > 0 {
			verdicts = rep.Verdicts()
		}
		md, err := s.resign(ctx, a.Manifest.Digest, verdicts)
		if err != nil {
			return fail(fault.Wrap(fault.ErrStorageUnavailable, fmt.Errorf("re-sign manifest: %w", err)))
		}
		out.ManifestBlob, out.OldManifestBlob = md, a.Manifest.Digest
	}
	return out, nil
}

// resign stores the manifest with the verdicts, signed again.
func (s *Service) resign(ctx context.Context, digest string, verdicts map[string]bpfverify.Verdict) (string, error) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return "", err
	}
	raw, err := blob.ReadAll(ctx, s.cfg.Blobs, d, 16<<20)
	if err != nil {
		return "", err
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return "", err
	}
	m.Verified = nil
	if verdicts != nil {
		m.Verified = map[string]manifest.Verification{}
	}
	for name, v := range verdicts {
		m.Verified[name] = manifest.Verification{Accepted: v.Accepted, Instructions: v.Instructions, Error: v.Error}
	}
	return s.cfg.Key.SignAndStore(ctx, s.cfg.Blobs, m)
}

// image returns the path of the kernel image blob digest, written once
// under WorkDir/images.
func (s *Service) image(ctx context.Context, digest string) (string, error) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return "", fmt.Errorf("kernel image: %w", err)
	}
	p := filepath.Join(s.cfg.WorkDir, "images", d.String())
	s.imagesMu.Lock()
	defer s.imagesMu.Unlock()
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	raw, err := blob.ReadAll(ctx, s.cfg.Blobs, d, maxImageSize)
	if err != nil {
		return "", fmt.Errorf("kernel image: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o640); err != nil {
		return "", fmt.Errorf("kernel image: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("kernel image: %w", err)
	}
	return p, nil
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
