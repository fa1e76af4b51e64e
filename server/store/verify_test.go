package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// verifyFixture fills db with one program relocated for kernels.
func verifyFixture(t *testing.T, db *DB, kernels map[string]string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	for kid, image := range kernels {
		p := strings.Split(kid, "/")
		if _, _, _, err := db.PutKernel(ctx, Kernel{KID: kid, Distro: p[0], Version: p[1], Arch: p[2], Release: p[3],
			BTFBlob: "btf-" + kid, BTFSize: 1, ImageBlob: image, ImageSize: int64(len(image))}, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.AddRevision(ctx, RevisionInput{Program: "p", Digest: "rev1", Entry: "p.bpf.c", BundleBlob: "bundle",
		Size: 1, Files: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.EnsureBuild(ctx, BuildInput{Program: "p", Revision: "rev1", Arch: "x86_64", CacheKey: "k"}); err != nil {
		t.Fatal(err)
	}
	job, err := db.Claim(ctx, testClaim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Finish(ctx, job.Lease, Outcome{State: api.StateSucceeded, ObjectBlob: "obj", ObjectSize: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.QueueArtifacts(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	artifacts := map[string]int64{}
	for {
		aj, err := db.ClaimArtifact(ctx, testClaim, "")
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := db.FinishArtifact(ctx, aj.Lease, ArtifactOutcome{Status: "ok", RelocatedBlob: "rel", RelocatedSize: 1,
			ManifestBlob: "manifest-1"}); err != nil {
			t.Fatal(err)
		}
		artifacts[aj.Kernel.KID] = aj.ID
	}
	return artifacts
}

func TestVerificationQueue(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		const withImage, without = "debian/12/x86_64/6.1.0-50-cloud-amd64", "debian/12/x86_64/6.12.1-cloud-amd64"
		arts := verifyFixture(t, db, map[string]string{withImage: "image-1", without: ""})

		// Finishing the relocations queued a verification for the kernel with
		// an image only, once: the sweep finds nothing missing.
		if states, _, err := db.VerificationCounts(ctx); err != nil || states["queued"] != 1 || len(states) != 1 {
			t.Fatalf("verifications after relocation: %v %v", states, err)
		}
		if n, err := db.QueueVerifications(ctx); err != nil || n != 0 {
			t.Fatalf("sweep: %d, %v", n, err)
		}
		// A worker claims it and dies: its lease runs out.
		dead := ClaimOptions{Owner: "dead", TTL: -time.Millisecond, MaxAttempts: 3}
		if _, err := db.ClaimVerification(ctx, dead); err != nil {
			t.Fatal(err)
		}
		job, err := db.ClaimVerification(ctx, testClaim)
		if err != nil || job.Artifact.ID != arts[withImage] || job.Kernel.KID != withImage || job.Kernel.ImageBlob != "image-1" ||
			job.Attempts != 2 || !job.Expired || job.Artifact.Manifest == nil {
			t.Fatalf("claim after the lease ran out: %+v, %v", job, err)
		}
		if _, err := db.ClaimVerification(ctx, testClaim); !errors.Is(err, ErrNotFound) {
			t.Fatalf("claim on an empty queue: %v", err)
		}
		if err := db.RequeueVerification(ctx, job.Artifact.ID); !errors.Is(err, ErrConflict) {
			t.Errorf("requeue while running: %v, want a conflict", err)
		}
		progs := []api.ProgramVerification{
			{Program: "a", Mode: "relocated", Accepted: true, Instructions: 10},
			{Program: "b", Mode: "relocated", Accepted: false, Verifier: true, Error: "BPF_MOV uses reserved fields"},
		}
		if err := db.FinishVerification(ctx, job.Lease, job.Artifact.ID, VerifyOutcome{Result: api.VerificationRejected,
			Programs: progs, KernelImage: "image-1", Release: "6.1.0-50-cloud-amd64", Accel: "tcg", BootMS: 2000,
			ManifestBlob: "manifest-2", OldManifestBlob: "manifest-1"}); err != nil {
			t.Fatal(err)
		}
		if err := db.FinishVerification(ctx, job.Lease, job.Artifact.ID, VerifyOutcome{Result: api.VerificationVerified}); err == nil {
			t.Error("finished twice")
		}
		a, err := db.Artifact(ctx, job.Artifact.ID)
		if err != nil || a.Manifest.Digest != "manifest-2" {
			t.Errorf("artifact manifest after verification: %+v %v", a.Manifest, err)
		}
		vs, err := db.Verifications(ctx, VerificationFilter{Program: "p"})
		if err != nil || len(vs) != 1 {
			t.Fatalf("list: %+v %v", vs, err)
		}
		v := vs[0]
		if v.State != "done" || v.Result != api.VerificationRejected || v.Kernel != withImage || v.Revision != "rev1" ||
			len(v.Programs) != 2 || v.Programs[1].Error != progs[1].Error || v.BootMS != 2000 || v.FinishedAt == nil {
			t.Errorf("verification: %+v", v)
		}
		if acc, total := v.Accepted(); acc != 1 || total != 2 {
			t.Errorf("accepted %d of %d", acc, total)
		}
		as := []api.Artifact{{ID: arts[withImage]}, {ID: arts[without]}}
		if err := db.WithVerifications(ctx, as); err != nil || as[0].Verification == nil || as[1].Verification != nil {
			t.Errorf("with verifications: %+v %v", as, err)
		}

		// Another image for the kernel: verified again (queued with the image).
		if _, err := db.SetKernelImage(ctx, withImage, "image-2", 7); err != nil {
			t.Fatal(err)
		}
		if n, err := db.QueueVerifications(ctx); err != nil || n != 0 {
			t.Fatalf("sweep after a new image: %d %v", n, err)
		}
		if job, err = db.ClaimVerification(ctx, testClaim); err != nil || job.Kernel.ImageBlob != "image-2" || job.Attempts != 1 {
			t.Fatalf("claim after a new image: %+v %v", job, err)
		}
		// A manifest replaced meanwhile is not overwritten.
		if err := db.FinishVerification(ctx, job.Lease, job.Artifact.ID, VerifyOutcome{Result: api.VerificationVerified,
			KernelImage: "image-2", ManifestBlob: "manifest-3", OldManifestBlob: "manifest-1"}); err != nil {
			t.Fatal(err)
		}
		if a, _ := db.Artifact(ctx, job.Artifact.ID); a.Manifest.Digest != "manifest-2" {
			t.Errorf("manifest %s, want manifest-2 kept", a.Manifest.Digest)
		}
		if n, _ := db.QueueVerifications(ctx); n != 0 {
			t.Errorf("queued %d with nothing new", n)
		}

		// The kernel without an image: nothing to verify on.
		if err := db.RequeueVerification(ctx, arts[without]); !errors.Is(err, ErrNotFound) {
			t.Errorf("requeue without an image: %v", err)
		}
		if err := db.RequeueVerification(ctx, arts[withImage]); err != nil {
			t.Errorf("requeue: %v", err)
		}
		if _, err := db.SetKernelImage(ctx, "no/such/x86_64/kernel", "x", 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("image for an unknown kernel: %v", err)
		}
		states, _, err := db.VerificationCounts(ctx)
		if err != nil || states["queued"] != 1 {
			t.Errorf("counts: %v %v", states, err)
		}
	})
}

// Verifications whose workers died too often fail; skipped ones are
// retried when a verifier starts.
func TestVerificationGivesUp(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		const kid = "debian/12/x86_64/6.1.0-50-cloud-amd64"
		verifyFixture(t, db, map[string]string{kid: "image"})
		dead := ClaimOptions{Owner: "dead", TTL: -time.Millisecond, MaxAttempts: 3}
		for i := range 3 {
			if _, err := db.ClaimVerification(ctx, dead); err != nil {
				t.Fatalf("claim %d: %v", i, err)
			}
		}
		if n, err := db.GiveUpExpired(ctx, QueueVerifications, 3); err != nil || n != 1 {
			t.Fatalf("give up: %d %v", n, err)
		}
		vs, _ := db.Verifications(ctx, VerificationFilter{})
		if len(vs) != 1 || vs[0].State != "error" || !strings.Contains(vs[0].Reason, "gave up after 3 attempts") {
			t.Fatalf("after 3 dead workers: %+v", vs)
		}
		if err := db.RequeueVerification(ctx, vs[0].ArtifactID); err != nil {
			t.Fatal(err)
		}
		job, err := db.ClaimVerification(ctx, testClaim)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.FinishVerification(ctx, job.Lease, job.Artifact.ID, VerifyOutcome{Result: api.VerificationSkipped,
			Reason: "no qemu"}); err != nil {
			t.Fatal(err)
		}
		if n, err := db.RequeueSkipped(ctx); err != nil || n != 1 {
			t.Errorf("skipped verifications queued again: %d %v", n, err)
		}
	})
}
