//go:build linux

package farmtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/farmtest"
)

// slowBundle is a program slow enough to compile (hundreds of programs in
// one object) that a kill lands while clang runs.
func slowBundle(t *testing.T, n int) *bpfsrc.Bundle {
	t.Helper()
	var src strings.Builder
	src.WriteString("#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n")
	for i := range n {
		fmt.Fprintf(&src, "SEC(\"tp/syscalls/sys_enter_getpid\") int p%d(void *ctx) { volatile int x = %d; return x * x; }\n", i, i)
	}
	src.WriteString("char LICENSE[] SEC(\"license\") = \"GPL\";\n")
	b, err := bpfsrc.New("slow.bpf.c", []bpfsrc.File{{Name: "slow.bpf.c", Data: []byte(src.String())}}, bpfsrc.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKillWorkerMidBuild: kill -9 the worker process that is compiling a
// build; the other worker takes the build over when its lease runs out
// and completes it, relocations included, with no restart of anything.
func TestKillWorkerMidBuild(t *testing.T) {
	f := replicaFarm(t, farmtest.Config{WorkerArgs: []string{"--workers", "1", "--relocators", "1"}})
	ctx := context.Background()
	btf, arch := hostBTF(t)
	kid := fmt.Sprintf("farmtest/1/%s/6.0.0-farmtest", arch)
	mustCLI(t, f, "kernels", "import", btf, "--id", kid)
	mustCLI(t, f, "kernels", "pin", kid)

	c := f.ClientAll()
	res, err := c.Push(ctx, "slow", slowBundle(t, 600), client.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Builds[0].ID
	var victim *farmtest.Proc
	for deadline := time.Now().Add(waitLimit); victim == nil; time.Sleep(10 * time.Millisecond) {
		b, err := c.Build(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if b.Done() {
			t.Fatalf("build %d finished (%s) before a worker was seen compiling it", id, b.State)
		}
		for _, w := range f.Workers() {
			if b.State == api.StateRunning && len(w.Children()) > 0 {
				victim = w
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no worker compiled build %d: %+v", id, b)
		}
	}
	var other *farmtest.Proc
	for _, w := range f.Workers() {
		if w != victim {
			other = w
		}
	}
	victim.Kill()
	killed := time.Now()
	t.Logf("killed %s while it compiled build %d", victim.Name, id)

	wctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	b, err := c.WaitBuild(wctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	if b.State != api.StateSucceeded || b.Attempts < 2 {
		t.Fatalf("build %d after the kill: %s, %d attempts: %s", id, b.State, b.Attempts, b.Error)
	}
	m, err := other.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m[`bpfarm_builds_total{result="succeeded"}`] < 1 {
		t.Fatalf("%s did not build it: builds %v", other.Name, m[`bpfarm_builds_total{result="succeeded"}`])
	}
	t.Logf("%s completed build %d %s after the kill (attempt %d)", other.Name, id, took.Round(time.Millisecond), b.Attempts)

	a, err := f.WaitSettled(ctx, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Err(); err != nil {
		t.Fatal(err)
	}
	if a.Artifacts != 1 {
		t.Fatalf("want the build's artifact for %s: %s", kid, a)
	}
	if _, err := f.AuditBlobRefs(ctx); err != nil {
		t.Fatal(err)
	}
}
