package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

var benchClaim = store.ClaimOptions{Owner: "bench", TTL: time.Minute, MaxAttempts: 3}

// BenchmarkStore measures the metadata database's hot paths on SQLite and
// on a real PostgreSQL over loopback: one job cycle (push a revision, queue
// its build, claim and finish it, queue, claim and finish its relocation
// for a kernel), and a host's desired state (what agents long-poll).
func BenchmarkStore(b *testing.B) {
	for _, backend := range storetest.Backends {
		b.Run("cycle/"+backend, func(b *testing.B) {
			ctx := context.Background()
			db := storetest.Open(b, backend)
			if _, _, _, err := db.PutKernel(ctx, store.Kernel{KID: "debian/12/x86_64/6.1.0-1-amd64", Distro: "debian",
				Version: "12", Arch: "x86_64", Release: "6.1.0-1-amd64", BTFBlob: "btf", BTFSize: 1}, false); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				rev := fmt.Sprintf("%064x", i)
				if _, err := db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: rev, Entry: "p.bpf.c",
					BundleBlob: "bundle", Size: 1, Files: 1}); err != nil {
					b.Fatal(err)
				}
				if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: rev, Arch: "x86_64",
					CacheKey: rev}); err != nil {
					b.Fatal(err)
				}
				job, err := db.Claim(ctx, benchClaim)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := db.Finish(ctx, job.Lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: "o"}); err != nil {
					b.Fatal(err)
				}
				if _, err := db.QueueArtifacts(ctx, job.ID); err != nil {
					b.Fatal(err)
				}
				aj, err := db.ClaimArtifact(ctx, benchClaim, "")
				if err != nil {
					b.Fatal(err)
				}
				if err := db.FinishArtifact(ctx, aj.Lease, store.ArtifactOutcome{Status: "ok", ManifestBlob: "m"}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("desired/"+backend, func(b *testing.B) {
			ctx := context.Background()
			db := storetest.Open(b, backend)
			const kid = "debian/12/x86_64/6.1.0-1-amd64"
			if _, _, _, err := db.PutKernel(ctx, store.Kernel{KID: kid, Distro: "debian", Version: "12", Arch: "x86_64",
				Release: "6.1.0-1-amd64", BTFBlob: "btf", BTFSize: 1}, false); err != nil {
				b.Fatal(err)
			}
			for p := range 5 {
				name := fmt.Sprint("prog", p)
				for r := range 3 {
					rev := fmt.Sprintf("%d%063x", p, r)
					if _, err := db.AddRevision(ctx, store.RevisionInput{Program: name, Digest: rev, Entry: "p.bpf.c",
						BundleBlob: "bundle", Size: 1, Files: 1}); err != nil {
						b.Fatal(err)
					}
					if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: name, Revision: rev, Arch: "x86_64",
						CacheKey: rev}); err != nil {
						b.Fatal(err)
					}
					job, err := db.Claim(ctx, benchClaim)
					if err != nil {
						b.Fatal(err)
					}
					db.Finish(ctx, job.Lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: "o"})
					db.QueueArtifacts(ctx, job.ID)
					aj, err := db.ClaimArtifact(ctx, benchClaim, "")
					if err != nil {
						b.Fatal(err)
					}
					db.FinishArtifact(ctx, aj.Lease, store.ArtifactOutcome{Status: "ok", ManifestBlob: "m"})
				}
				if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: name}, "admin"); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := db.RegisterHost(ctx, api.HostRegistration{Name: "h1", Kernel: kid}, "admin"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				ds, err := db.DesiredState(ctx, "h1")
				if err != nil || len(ds.Programs) != 5 || ds.Programs[0].Revision == "" {
					b.Fatalf("desired state: %+v %v", ds, err)
				}
			}
		})
	}
}
