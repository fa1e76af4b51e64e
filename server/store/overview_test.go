package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

// overviewFixture is an archive of two x86_64 kernels (one with an image)
// and an arm64 one; program execsnoop with two revisions, the newer built
// for x86_64 and relocated (ok on one kernel, poisoned on the other);
// program opensnoop with one revision and no build.
type overviewFixture struct {
	kernels   map[string]int64 // kid → row id
	rev2      int64
	build     int64
	lease     store.Lease
	artifacts map[string]int64 // kid → artifact id
}

func seedOverview(t *testing.T, db *store.DB) overviewFixture {
	t.Helper()
	ctx := context.Background()
	f := overviewFixture{kernels: map[string]int64{}, artifacts: map[string]int64{}}
	for _, kid := range []string{"debian/12/x86_64/6.1.0-1-amd64", "debian/12/x86_64/6.1.0-2-amd64", "debian/12/arm64/6.1.0-1-arm64"} {
		p := strings.Split(kid, "/")
		image := ""
		if strings.HasSuffix(kid, "-2-amd64") {
			image = "image-" + kid
		}
		k, _, _, err := db.PutKernel(ctx, store.Kernel{KID: kid, Distro: p[0], Version: p[1], Arch: p[2], Release: p[3],
			BTFBlob: "btf-" + kid, BTFSize: 1, ImageBlob: image, ImageSize: int64(len(image))}, false)
		if err != nil {
			t.Fatal(err)
		}
		f.kernels[kid] = k.ID
	}
	for _, r := range []struct{ prog, digest string }{{"execsnoop", "rev1"}, {"opensnoop", "rev-o"}, {"execsnoop", "rev2"}} {
		if _, err := db.AddRevision(ctx, store.RevisionInput{Program: r.prog, Digest: r.digest, Entry: r.prog + ".bpf.c",
			BundleBlob: "bundle-" + r.digest, Size: 1, Files: 1, PushedBy: "alice"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // revisions are ordered by creation time
	}
	var err error
	if f.rev2, err = db.RevisionID(ctx, "execsnoop", "rev2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "execsnoop", Revision: "rev2", Arch: "x86_64", CacheKey: "k"}); err != nil {
		t.Fatal(err)
	}
	job, err := db.Claim(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	f.build, f.lease = job.ID, job.Lease
	return f
}

// relocateAll queues and finishes the relocations of the fixture's
// succeeded build.
func (f *overviewFixture) relocateAll(t *testing.T, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.QueueArtifacts(ctx, f.build); err != nil {
		t.Fatal(err)
	}
	for {
		aj, err := db.ClaimArtifact(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3}, "")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		status := "ok"
		if strings.HasSuffix(aj.Kernel.KID, "-2-amd64") {
			status = "poisoned"
		}
		rep := &manifest.Report{Programs: []manifest.ProgramReport{{Name: "handle_exec", Status: status}}}
		if err := db.FinishArtifact(ctx, aj.Lease, store.ArtifactOutcome{Status: status, Report: rep, RelocatedBlob: "rel",
			RelocatedSize: 1, ManifestBlob: "manifest"}); err != nil {
			t.Fatal(err)
		}
		f.artifacts[aj.Kernel.KID] = aj.ID
	}
}

func TestOverview(t *testing.T) { storetest.Each(t, testOverview) }

func testOverview(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seedOverview(t, db)

	per, err := db.KernelsPerArch(ctx)
	if err != nil || per["x86_64"] != 2 || per["arm64"] != 1 || len(per) != 2 {
		t.Fatalf("kernels per arch: %v %v", per, err)
	}
	ks, err := db.KernelsOfArches(ctx, []string{"x86_64"})
	if err != nil || len(ks) != 2 || ks[0].KID != "debian/12/x86_64/6.1.0-1-amd64" || ks[0].Arch != "x86_64" ||
		ks[0].Release != "6.1.0-1-amd64" || ks[0].ID != f.kernels[ks[0].KID] {
		t.Fatalf("kernels of x86_64: %+v %v", ks, err)
	}
	if ks, err := db.KernelsOfArches(ctx, nil); err != nil || len(ks) != 0 {
		t.Fatalf("kernels of no arch: %+v %v", ks, err)
	}

	// While the build runs, the revision has pending work.
	if n, err := db.RevisionPending(ctx, f.rev2, time.Minute); err != nil || n != 1 {
		t.Fatalf("pending while building: %d %v", n, err)
	}
	ps, err := db.ProgramOverview(ctx, "")
	if err != nil || len(ps) != 2 || ps[0].Name != "execsnoop" || ps[1].Name != "opensnoop" {
		t.Fatalf("overview: %+v %v", ps, err)
	}
	if p := ps[0]; p.Revision != "rev2" || p.Entry != "execsnoop.bpf.c" || p.PushedBy != "alice" || p.PushedAt.IsZero() ||
		len(p.Arches) != 1 || p.Arches[0].State != api.StateRunning || p.Arches[0].BuildID != f.build ||
		p.Arches[0].Kernels != 2 || p.Arches[0].PerKernel || p.Arches[0].Total() != 0 {
		t.Fatalf("execsnoop while building: %+v", p)
	}
	if p := ps[1]; p.Revision != "rev-o" || len(p.Arches) != 0 {
		t.Fatalf("opensnoop: %+v", p)
	}

	// Succeeded: its relocations were queued with its outcome, one per
	// x86_64 kernel, and are pending, grace period or not.
	if n, err := db.Finish(ctx, f.lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: "obj", ObjectSize: 1}); err != nil || n != 2 {
		t.Fatalf("finish: %d relocations queued, %v", n, err)
	}
	for _, grace := range []time.Duration{time.Minute, -time.Minute} {
		if n, err := db.RevisionPending(ctx, f.rev2, grace); err != nil || n != 2 {
			t.Fatalf("pending relocations (grace %v): %d %v", grace, n, err)
		}
	}
	f.relocateAll(t, db)
	if n, err := db.RevisionPending(ctx, f.rev2, time.Minute); err != nil || n != 0 {
		t.Fatalf("pending when done: %d %v", n, err)
	}

	want := store.Tally{OK: 1, Poisoned: 1}
	if c, err := db.BuildTally(ctx, f.build); err != nil || c != want || c.Done() != 2 || c.Total() != 2 {
		t.Fatalf("build tally: %+v %v", c, err)
	}
	ps, err = db.ProgramOverview(ctx, "EXEC")
	if err != nil || len(ps) != 1 || ps[0].Name != "execsnoop" {
		t.Fatalf("overview of EXEC: %+v %v", ps, err)
	}
	if a := ps[0].Arches[0]; a.State != api.StateSucceeded || a.Tally != want || a.Builds[api.StateSucceeded] != 1 {
		t.Fatalf("execsnoop relocated: %+v", a)
	}
	// LIKE's wildcards are matched literally.
	for _, q := range []string{"%", "_", `\`} {
		if ps, err := db.ProgramOverview(ctx, q); err != nil || len(ps) != 0 {
			t.Fatalf("overview of %q: %+v %v", q, ps, err)
		}
	}

	byKernel, err := db.LatestTallyByKernel(ctx)
	if err != nil || len(byKernel) != 2 ||
		byKernel[f.kernels["debian/12/x86_64/6.1.0-1-amd64"]] != (store.Tally{OK: 1}) ||
		byKernel[f.kernels["debian/12/x86_64/6.1.0-2-amd64"]] != (store.Tally{Poisoned: 1}) {
		t.Fatalf("tally by kernel: %+v %v", byKernel, err)
	}
	kas, err := db.KernelArtifacts(ctx, f.kernels["debian/12/x86_64/6.1.0-2-amd64"])
	if err != nil || len(kas) != 1 || kas[0].Program != "execsnoop" || kas[0].Revision != "rev2" || kas[0].BuildID != f.build ||
		kas[0].Status != "poisoned" || kas[0].State != api.ArtifactDone || kas[0].ArtifactID != f.artifacts["debian/12/x86_64/6.1.0-2-amd64"] {
		t.Fatalf("artifacts of kernel: %+v %v", kas, err)
	}

	// A verification on the kernel with an image (queued when its
	// relocation finished) shows with its artifact.
	if n, err := db.QueueVerifications(ctx); err != nil || n != 0 {
		t.Fatalf("sweep verifications: %d %v", n, err)
	}
	vj, err := db.ClaimVerification(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.FinishVerification(ctx, vj.Lease, vj.Artifact.ID, store.VerifyOutcome{Result: api.VerificationRejected,
		Programs: []api.ProgramVerification{{Program: "handle_exec", Mode: "relocated", Error: "R1 invalid mem access"}}}); err != nil {
		t.Fatal(err)
	}
	arts, err := db.RevisionArtifacts(ctx, f.rev2)
	if err != nil || len(arts) != 2 {
		t.Fatalf("artifacts of revision: %+v %v", arts, err)
	}
	for _, a := range arts {
		if a.BuildID != f.build || a.PerKernel || !strings.Contains(string(a.Report), `"handle_exec"`) {
			t.Errorf("artifact of revision: %+v", a)
		}
		switch a.ID {
		case f.artifacts["debian/12/x86_64/6.1.0-2-amd64"]:
			if v := a.Verification; v == nil || v.State != "done" || v.Result != api.VerificationRejected ||
				len(v.Programs) != 1 || v.Programs[0].Error != "R1 invalid mem access" {
				t.Errorf("verified artifact: %+v", v)
			}
		default:
			if a.Verification != nil || a.Status != "ok" {
				t.Errorf("unverified artifact: %+v", a)
			}
		}
	}

	if _, err := db.RevisionID(ctx, "execsnoop", "rev-o"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revision of another program: %v", err)
	}
	if arts, err := db.RevisionArtifacts(ctx, f.rev2+100); err != nil || len(arts) != 0 {
		t.Fatalf("artifacts of no revision: %+v %v", arts, err)
	}
}

func TestEffective(t *testing.T) {
	as := []api.Assignment{
		{ID: 1, Program: "a", Selector: map[string]string{"env": "prod"}},
		{ID: 2, Program: "b"},
		{ID: 3, Program: "a", Selector: map[string]string{"env": "prod", "role": "web"}},
		{ID: 4, Program: "a", Selector: map[string]string{"env": "staging"}},
	}
	got := store.Effective(as, map[string]string{"env": "prod", "role": "web"})
	if len(got) != 2 || got["a"].ID != 3 || got["b"].ID != 2 {
		t.Fatalf("prod web: %+v", got)
	}
	got = store.Effective(as, map[string]string{"env": "prod"})
	if len(got) != 2 || got["a"].ID != 1 || got["b"].ID != 2 {
		t.Fatalf("prod: %+v", got)
	}
	if got := store.Effective(as, nil); len(got) != 1 || got["b"].ID != 2 {
		t.Fatalf("no labels: %+v", got)
	}
}
