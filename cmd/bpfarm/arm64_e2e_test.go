package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/verify"
)

var (
	arm64RunnerOnce sync.Once
	arm64RunnerErr  error
)

// verifierRunnerArm64 returns the host runner (as verifierRunner) with the
// arm64 build of bpfarm-verifier beside it, named as servers look for it
// (bpfarm-verifier-arm64), and skips (or fails, strict) without
// qemu-system-aarch64.
func verifierRunnerArm64(t *testing.T) string {
	t.Helper()
	if _, err := verify.QemuFor("arm64"); err != nil {
		testenv.Require(t, "qemu-system-aarch64", err.Error())
	}
	runner := verifierRunner(t)
	arm64RunnerOnce.Do(func() {
		_, arm64RunnerErr = verify.BuildRunnerArch(context.Background(), repoRoot(t), runner+"-arm64", "arm64")
	})
	if arm64RunnerErr != nil {
		t.Fatal(arm64RunnerErr)
	}
	if p, err := verify.RunnerFor(runner, "arm64"); err != nil || p != runner+"-arm64" {
		t.Fatalf("the server would not find the arm64 runner: %q, %v", p, err)
	}
	return runner
}

// TestVerifyArm64: a real Debian arm64 kernel package is imported with its
// image; a push for arm64 compiles against it, relocates, and is verified
// on that kernel booted under qemu-system-aarch64 (TCG, -M virt -cpu max)
// with the arm64 build of bpfarm-verifier as /init; the verified cell
// reaches the API and the UI's matrix.
func TestVerifyArm64(t *testing.T) {
	deb := testenv.DebianKernelArch(t, "6.1", "arm64")
	runner := verifierRunnerArm64(t)
	// An arm64 kernel under TCG boots in 15–25 s on an idle 2-core host,
	// and well past the default 60 s limit on a busy one: the limit only
	// bounds a hung VM.
	f := startFarm(t, "", "--verifier", runner, "--verify-vms", "1", "--verify-timeout", "5m", "--anonymous-read")

	var imp api.KernelImport
	r := f.cli("kernels", "import", "--json", deb)
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &imp) != nil || len(imp.Kernels) != 1 {
		t.Fatalf("import %s: %d %s %s", deb, r.code, r.stdout, r.stderr)
	}
	k := imp.Kernels[0].Kernel
	if k.Arch != "arm64" || !k.HasImage || !strings.HasSuffix(k.Release, "-cloud-arm64") {
		t.Fatalf("imported kernel: %+v, want an arm64 cloud kernel with its image", k)
	}

	dir := filepath.Join(repoRoot(t), "examples", "execsnoop")
	if r := f.cli("push", dir, "--arch", "arm64", "--wait"); r.code != 0 {
		t.Fatalf("push --arch arm64: %d %s %s", r.code, r.stdout, r.stderr)
	}
	as := waitArtifacts(t, f, "execsnoop", 1)
	if a := as[0]; a.Kernel != k.ID || a.State != api.ArtifactDone || a.Status != "ok" {
		t.Fatalf("arm64 artifact: %+v, want ok on %s", a, k.ID)
	}

	v := waitVerifications(t, f, "execsnoop", 1)[0]
	acc, total := v.Accepted()
	t.Logf("execsnoop on %s: %s %s (%d/%d accepted, boot %dms, VM %dms, %s)", v.Kernel, v.Result, firstLine(v.Reason),
		acc, total, v.BootMS, v.DurationMS, v.Accel)
	for _, p := range v.Programs {
		t.Logf("    %s %s: accepted=%v insns=%d load=%.1fms %s", p.Mode, p.Program, p.Accepted, p.Instructions, p.LoadMS, p.Error)
	}
	if v.Kernel != k.ID || v.Result != api.VerificationVerified || total == 0 || acc != total {
		t.Fatalf("verification: %s %q on %s, %d/%d accepted, want verified\n%s", v.Result, v.Reason, v.Kernel, acc, total, v.Console)
	}
	if v.Release != k.Release || v.Accel != "tcg" {
		t.Errorf("booted release %q under %q, want %s under tcg", v.Release, v.Accel, k.Release)
	}

	var arts []api.Artifact
	f.api("GET", "/api/v1/artifacts?program=execsnoop&kernel="+k.ID, f.admin, "", nil, &arts)
	if len(arts) != 1 || arts[0].Verification == nil || arts[0].Verification.Result != api.VerificationVerified {
		t.Fatalf("artifact JSON: %+v", arts)
	}

	// The UI's matrix: the arm64 group, its cell verified.
	code, page := f.api("GET", "/programs/execsnoop", "", "", nil, nil)
	if code != 200 {
		t.Fatalf("UI program page: %d", code)
	}
	html := string(page)
	if !strings.Contains(html, "debian "+k.Version+" · arm64") || !strings.Contains(html, "✔ verified") ||
		!strings.Contains(html, k.Release) {
		t.Errorf("the UI's matrix shows no verified arm64 cell for %s:\n%s", k.ID, html)
	}
}
