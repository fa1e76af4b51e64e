package build

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/server/queue"

	"github.com/bpfarm/bpfarm/btf/core"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
)

// maxObjectSize bounds a compiled object read back for relocation.
const maxObjectSize = 64 << 20

// relocator turns succeeded builds into per-kernel artifacts: relocation
// report, minimized BTF, pre-relocated object and a signed manifest.
type relocator struct {
	s    *Service
	wake *queue.Waker

	mu      sync.Mutex
	objects map[string]*core.Object // parsed objects by blob digest
	order   []string
}

func newRelocator(s *Service) *relocator {
	return &relocator{s: s, wake: queue.NewWaker(s.db, store.TopicArtifactQueued), objects: map[string]*core.Object{}}
}

// kick wakes an idle relocator, in this process or another.
func (r *relocator) kick() { r.s.db.Notify(context.Background(), store.TopicArtifactQueued) }

// run claims and runs relocations until ctx is done, preferring
// relocations for the kernel whose BTF it parsed last.
func (r *relocator) run(ctx context.Context, n int) {
	log := r.s.log.With("relocator", n)
	lastBTF := ""
	claim := func(ctx context.Context) (*store.ArtifactJob, error) { return r.s.db.ClaimArtifact(ctx, lastBTF) }
	queue.Loop(ctx, log, "artifact", r.wake, claim, func(ctx context.Context, job *store.ArtifactJob) {
		lastBTF = job.Kernel.BTFBlob
		r.relocate(ctx, log, job)
	}, func(ctx context.Context, job *store.ArtifactJob, err error) {
		r.s.metrics.relocations.WithLabelValues("error").Inc()
		if err := r.s.db.FinishArtifact(ctx, job.ID, store.ArtifactOutcome{Error: err.Error()}); err != nil {
			log.Error("record artifact", "artifact", job.ID, "err", err)
		}
		r.s.changed()
	})
}

func (r *relocator) relocate(ctx context.Context, log *slog.Logger, job *store.ArtifactJob) {
	if r.s.jobHook != nil {
		r.s.jobHook("artifact", job.ID)
	}
	start := time.Now()
	out, err := r.artifact(ctx, job)
	if ctx.Err() != nil {
		return // queued again on the next start
	}
	if err != nil {
		out = store.ArtifactOutcome{Error: err.Error()}
		log.Error("relocation failed", "artifact", job.ID, "build", job.Build.ID, "kernel", job.Kernel.KID, "err", err)
		r.s.metrics.relocations.WithLabelValues("error").Inc()
	} else {
		r.s.metrics.relocations.WithLabelValues(out.Status).Inc()
	}
	if err := r.s.db.FinishArtifact(context.WithoutCancel(ctx), job.ID, out); err != nil {
		log.Error("record artifact", "artifact", job.ID, "err", err)
		return
	}
	r.s.metrics.relocationDuration.Observe(time.Since(start).Seconds())
	log.Debug("relocated", "artifact", job.ID, "program", job.Build.Program, "kernel", job.Kernel.KID,
		"status", out.Status, "duration", time.Since(start))
	r.s.changed()
}

func (r *relocator) object(ctx context.Context, digest string) (*core.Object, []byte, error) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return nil, nil, err
	}
	raw, err := blob.ReadAll(ctx, r.s.blobs, d, maxObjectSize)
	if err != nil {
		return nil, nil, fmt.Errorf("read object: %w", err)
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

func (r *relocator) artifact(ctx context.Context, job *store.ArtifactJob) (store.ArtifactOutcome, error) {
	var out store.ArtifactOutcome
	b := job.Build
	if b.Object == nil {
		return out, fmt.Errorf("build %d has no object", b.ID)
	}
	obj, raw, err := r.object(ctx, b.Object.Digest)
	if err != nil {
		return out, err
	}
	k, err := r.s.archive.Parsed(ctx, job.Kernel)
	if err != nil {
		return out, err
	}
	res, err := obj.Relocate(k)
	if err != nil {
		return out, fmt.Errorf("relocate for %s: %w", job.Kernel.KID, err)
	}
	report := reportOf(res.Report)
	report.Kernel = job.Kernel.KID
	out.Report = &report
	out.Status = overall(report)
	minD, err := blob.PutBytes(ctx, r.s.blobs, res.MinBTF)
	if err != nil {
		return out, fmt.Errorf("store minimized BTF: %w", err)
	}
	relD, err := blob.PutBytes(ctx, r.s.blobs, res.Relocated)
	if err != nil {
		return out, fmt.Errorf("store relocated object: %w", err)
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
	md, err := r.s.key.SignAndStore(ctx, r.s.blobs, m)
	if err != nil {
		return out, err
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

// KernelAdded queues, for a newly imported kernel, the relocation of the
// latest revision of every program.
func (s *Service) KernelAdded(ctx context.Context, kernelID int64) (int, error) {
	n, err := s.db.QueueArtifactsForKernel(ctx, kernelID)
	if n > 0 {
		s.relocator.kick()
	}
	return n, err
}
