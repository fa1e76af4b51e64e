//go:build linux

package server

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/farmtest"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// settleLimit bounds the wait for a farm to settle after a fault: a guard
// against waiting forever, far beyond the retries' backoff.
const settleLimit = 10 * time.Minute

// pushAccepted pushes variant and returns the ids of the builds queued.
func (f *faultServer) pushAccepted(variant string) []int64 {
	f.t.Helper()
	res, err := f.push("execsnoop", variant)
	if err != nil {
		f.t.Fatalf("push %s: %v", variant, err)
	}
	var ids []int64
	for _, b := range res.Builds {
		ids = append(ids, b.ID)
	}
	return ids
}

// waitRunning waits (a while at most) until one of the builds ids runs or
// is done, so that a fault injected next catches builds at work.
func (f *faultServer) waitRunning(ids []int64) {
	f.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, id := range ids {
			b, err := f.c.Build(context.Background(), id, 0)
			if err != nil {
				f.t.Fatal(err)
			}
			if b.State != api.StateQueued {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMet waits, while the fault lasts, until a build has met it: one
// was claimed, failed for the farm's reason and waits for its retry
// (queued again after an attempt). It fails the test if none does.
func (f *faultServer) waitMet() {
	f.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		bs, err := f.c.Builds(context.Background(), "")
		if err != nil {
			f.t.Fatal(err)
		}
		for _, b := range bs {
			if b.State == api.StateQueued && b.Attempts >= 1 {
				f.t.Logf("build #%d met the fault: queued again after %d attempt(s)", b.ID, b.Attempts)
				return
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatal("no build met the fault: none failed an attempt and went back to the queue")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settled waits until every build accepted (ids) and every artifact is
// final, then checks what the farm promises after a fault: every accepted
// build succeeded, or failed for the user's reason (never for the
// farm's), every succeeded build has a done artifact for every kernel of
// its arch, and every blob named is served (farmtest.AuditAPI). Unless
// first (no fault yet), some build must have been retried.
func (f *faultServer) settled(ids []int64, first bool) {
	t := f.t
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(settleLimit)
	var audit *farmtest.Audit
	for {
		var err error
		audit, err = farmtest.AuditAPI(ctx, f.c)
		if err != nil {
			t.Fatal(err)
		}
		if audit.Settled() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled %v after the fault: %v", settleLimit, audit.Err())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("settled in %v: %s", time.Since(start).Round(time.Second), audit)
	for _, fb := range audit.FailedBuilds {
		t.Logf("failed: %s", fb)
	}
	for _, p := range audit.Problems {
		t.Errorf("audit: %s", p)
	}
	retried := 0
	for _, id := range ids {
		b, err := f.c.Build(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if b.Attempts > 1 {
			retried++
			t.Logf("build #%d: %s after %d attempts", b.ID, b.State, b.Attempts)
		}
		switch {
		case b.State == api.StateSucceeded:
		case b.State == api.StateFailed && b.ErrorKind == "user":
			t.Logf("build #%d failed for the user's reason: %s", b.ID, b.Error)
		default:
			t.Errorf("accepted build #%d ended %s (%s, %d attempts): %s", b.ID, b.State, b.ErrorKind, b.Attempts, b.Error)
		}
	}
	if !first && retried == 0 {
		t.Error("no accepted build was retried: the fault was not met")
	}
	arts, err := f.c.Artifacts(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range arts {
		if a.State != api.ArtifactDone {
			t.Errorf("artifact #%d (build #%d, %s) ended %s: %s", a.ID, a.BuildID, a.Kernel, a.State, a.Error)
		}
	}
}

// storageFault is a way for the object storage to go away and come back.
type storageFault struct {
	name         string
	break_, mend func(m *testenv.MinIOServer)
}

var storageFaults = []storageFault{
	{"frozen", (*testenv.MinIOServer).Freeze, (*testenv.MinIOServer).Thaw},
	{"killed", (*testenv.MinIOServer).Kill, (*testenv.MinIOServer).Restart},
}

// TestFaultS3DuringPushes takes the object storage away (frozen with
// SIGSTOP, or killed) while builds run: pushes answer 503 "object storage
// unreachable" instead of hanging, the server keeps serving, and once
// storage is back (SIGCONT, or a restart of MinIO; never of bpfarm) every
// accepted build ends succeeded with an artifact for every kernel.
func TestFaultS3DuringPushes(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: minutes")
	}
	for _, sf := range storageFaults {
		t.Run(sf.name, func(t *testing.T) {
			eachDatabase(t, func(t *testing.T, cfg Config) {
				m := testenv.StartMinIO(t)
				// One worker: builds queue up, and those claimed
				// during the outage meet it.
				cfg.S3, cfg.Workers, cfg.HostKernel = m.Config, 1, true
				cfg.BlobTimeout, cfg.BlobIdleTimeout = time.Second, 2*time.Second
				f := startFaultServer(t, cfg)

				var ids []int64
				for _, v := range []string{"a", "b", "c", "d", "e", "f"} {
					ids = append(ids, f.pushAccepted(v)...)
				}
				f.waitRunning(ids)
				sf.break_(m)
				err, took := timed(t, "push", func() error { _, err := f.push("execsnoop", "during"); return err })
				t.Logf("push with S3 %s: failed after %v: %v", sf.name, took.Round(time.Millisecond), err)
				wantUnavailable(t, "push", err, causeS3)
				code, body, retry := f.get("/readyz")
				want503(t, "readyz", code, body, retry, causeS3)
				if code, body, _ := f.get("/api/v1/programs"); code != http.StatusOK {
					t.Errorf("programs with S3 %s: %d %s", sf.name, code, body)
				}
				f.waitMet()
				sf.mend(m)

				f.waitReady(time.Minute)
				ids = append(ids, f.pushAccepted("after")...)
				f.settled(ids, false)
			})
		})
	}
}

// TestFaultVolumeFills fills the data volume (database, blobs, compiles:
// everything under --data) while builds run: pushes answer 503 "no space
// left on the data volume", and once space is freed every accepted build
// ends succeeded with an artifact for every kernel, with no restart.
func TestFaultVolumeFills(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: minutes")
	}
	eachDatabase(t, func(t *testing.T, cfg Config) {
		vol := testenv.SmallVolume(t, 1<<30)
		cfg.Data, cfg.Workers, cfg.HostKernel = filepath.Join(vol.Dir, "data"), 1, true
		f := startFaultServer(t, cfg)
		// Room for a build, not for the precompiled vmlinux.h (16 MB):
		// its build fails, and must not be remembered as built (every
		// later build would mount the missing file and fail).
		vol.FillLeaving(10 << 20)
		ids := f.pushAccepted("first")
		f.settled(ids, true)
		if b, err := f.c.Build(context.Background(), ids[0], 0); err != nil || b.UsedPCH {
			t.Fatalf("first build: %v; used a precompiled header, so its build did not meet the full disk", err)
		}
		vol.Release()

		for _, v := range []string{"a", "b", "c", "d", "e", "f"} {
			ids = append(ids, f.pushAccepted(v)...)
		}
		f.waitRunning(ids)
		vol.Fill()
		err, took := timed(t, "push", func() error { _, err := f.push("execsnoop", "during"); return err })
		t.Logf("push with the volume full: failed after %v: %v", took.Round(time.Millisecond), err)
		wantUnavailable(t, "push", err, causeNoSpace)
		code, body, retry := f.get("/readyz")
		want503(t, "readyz", code, body, retry, causeNoSpace)
		f.waitMet()
		vol.Release()

		f.waitReady(time.Minute)
		ids = append(ids, f.pushAccepted("after")...)
		f.settled(ids, false)
	})
}
