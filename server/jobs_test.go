package server

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/failpoint"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/store"
)

// waitArtifacts waits until program has a done artifact for n kernels.
func waitArtifacts(t *testing.T, c *client.Client, program string, n int) []api.Artifact {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		as, err := c.Artifacts(ctx, program, "")
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, a := range as {
			if a.State == api.ArtifactDone {
				done++
			}
		}
		if done == n {
			return as
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %d of %d artifacts done: %+v", program, done, n, as)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// importHostBTF imports this host's BTF under kid.
func importHostBTF(t *testing.T, c *client.Client, kid string) {
	t.Helper()
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		testenv.Require(t, "host kernel BTF", err.Error())
	}
	id, err := kernel.ParseID(kid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportKernel(context.Background(), &source.Kernel{ID: id, BTF: raw, Source: "test"}, client.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCacheHitArtifacts is defect 2 of issue 11: a push that is a cache
// hit of another program's build gets artifacts for every kernel already
// in the archive, like the build it copies.
func TestCacheHitArtifacts(t *testing.T) {
	c, _ := startServerWith(t, nil)
	ctx := context.Background()
	importHostBTF(t, c, "debian/12/x86_64/6.1.0-71-amd64")
	importHostBTF(t, c, "debian/12/x86_64/6.1.0-72-amd64")
	res := pushExample(t, c, "execsnoop")
	if b, err := c.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build: %+v %v", b, err)
	}
	waitArtifacts(t, c, "execsnoop", 2)
	b, err := exampleBundleErr("execsnoop")
	if err != nil {
		t.Fatal(err)
	}
	hit, err := c.Push(ctx, "copy", b, client.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hit.Builds[0].State != api.StateSucceeded || hit.Builds[0].CachedFrom != res.Builds[0].ID {
		t.Fatalf("not a cache hit: %+v", hit.Builds[0])
	}
	as := waitArtifacts(t, c, "copy", 2)
	for _, a := range as {
		if a.BuildID != hit.Builds[0].ID || a.Status != "ok" {
			t.Errorf("artifact of the cache hit: %+v", a)
		}
	}
}

// TestInfraRetry is defect 3 of issue 11: a build that fails because
// storage failed (a failpoint makes storing the object fail) is an
// infrastructure failure: it goes back to the queue with backoff, is
// never served as a cache hit, and succeeds once the fault clears; when
// the fault does not clear, it fails (kind infra) after its last attempt.
func TestInfraRetry(t *testing.T) {
	const fp = "build/store-object"
	failpoint.Enable(fp, failpoint.Fail, 1)
	defer failpoint.Disable(fp)
	c, _ := startServerWith(t, func(cfg *Config) {
		cfg.Jobs.Backoff, cfg.Jobs.MaxBackoff, cfg.Jobs.MaxAttempts = 50*time.Millisecond, 200*time.Millisecond, 3
	})
	ctx := context.Background()
	res := pushExample(t, c, "execsnoop")
	b, err := c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.State != api.StateFailed || b.ErrorKind != store.ErrorKindInfra || b.Attempts != 3 ||
		!strings.Contains(b.Error, "gave up after 3 attempts") || !strings.Contains(b.Error, "object storage unreachable") {
		t.Fatalf("build with storage down: %s %s %q attempt %d", b.State, b.ErrorKind, b.Error, b.Attempts)
	}
	// Never a cache hit: the same sources under another name compile.
	bundle, err := exampleBundleErr("execsnoop")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.Push(ctx, "other", bundle, client.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if other.Builds[0].CachedFrom != 0 || other.Builds[0].State != api.StateQueued {
		t.Fatalf("an infra failure served as a cache hit: %+v", other.Builds[0])
	}
	// The fault clears while "other" is retried: it succeeds.
	for {
		ob, err := c.Build(ctx, other.Builds[0].ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ob.Attempts >= 2 || ob.Done() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	failpoint.Disable(fp)
	ob, err := c.WaitBuild(ctx, other.Builds[0].ID, nil)
	if err != nil || ob.State != api.StateSucceeded || ob.Attempts < 2 {
		t.Fatalf("build after the fault cleared: %+v %v", ob, err)
	}
	// The failed build is retried on its next push.
	again := pushExample(t, c, "execsnoop")
	if b, err := c.WaitBuild(ctx, again.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("pushed again: %+v %v", b, err)
	}
}
