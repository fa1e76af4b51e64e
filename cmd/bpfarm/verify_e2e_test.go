package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/verify"
)

var (
	verifierOnce sync.Once
	verifierBin  string
	verifierErr  error
)

// verifierRunner builds bpfarm-verifier once, and skips (or fails, strict)
// without qemu-system-x86_64.
func verifierRunner(t *testing.T) string {
	t.Helper()
	if _, err := verify.QemuFor("x86_64"); err != nil {
		testenv.Require(t, "qemu-system-x86_64", err.Error())
	}
	verifierOnce.Do(func() {
		// Not next to bpfarmBin: servers find a runner there by default,
		// and the other tests' servers should not verify.
		dir := filepath.Join(filepath.Dir(bpfarmBin), "verifier")
		if verifierErr = os.MkdirAll(dir, 0o755); verifierErr == nil {
			verifierBin, verifierErr = verify.BuildRunner(context.Background(), repoRoot(t), filepath.Join(dir, verify.RunnerName))
		}
	})
	if verifierErr != nil {
		t.Fatal(verifierErr)
	}
	return verifierBin
}

// debImage extracts the compressed kernel image of a linux-image .deb.
func debImage(t *testing.T, deb string) (image, release string) {
	t.Helper()
	dir := t.TempDir()
	err := source.Import(context.Background(), deb, source.Options{TempDir: dir, KeepImage: true}, func(k *source.Kernel) error {
		image, release = k.Image, k.ID.Release
		return nil
	})
	if err != nil || image == "" {
		t.Fatalf("image of %s: %q, %v", deb, image, err)
	}
	return image, release
}

// waitVerifications waits until program has n finished verifications.
func waitVerifications(t *testing.T, f *farm, program string, n int) []api.Verification {
	t.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for {
		var vs []api.Verification
		f.api("GET", "/api/v1/verifications?program="+program, f.admin, "", nil, &vs)
		done := 0
		for _, v := range vs {
			if v.State == "done" || v.State == "error" {
				done++
			}
		}
		if len(vs) == n && done == n {
			return vs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d verifications, %d done, want %d: %+v", program, len(vs), done, n, vs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// importImage attaches a kernel image with the CLI.
func importImage(t *testing.T, f *farm, kid, image string) result {
	t.Helper()
	return f.cli("kernels", "import", "--image", image, "--id", kid)
}

// TestVerifyOnRealKernels: the examples and a program that uses an
// instruction 6.6 introduced are verified on the real Debian 6.1 and 6.12
// kernels, booted in VMs; 6.1's verifier rejects that program with its own
// message, 6.12's accepts it; a kernel whose image does not boot is a
// kernel-error and the other verifications go on; the verdicts reach the
// API, the re-signed manifests, `programs show` and the agent's
// --require-verified check.
func TestVerifyOnRealKernels(t *testing.T) {
	deb61 := testenv.DebianKernel(t, "6.1")
	deb612 := testenv.DebianKernel(t, "6.12")
	runner := verifierRunner(t)
	f := startFarm(t, "", "--verifier", runner, "--verify-vms", "2")

	dirs := exampleDirs(t)
	newer := filepath.Join(t.TempDir(), "newer")
	os.Mkdir(newer, 0o755)
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "verify", "testdata", "newer.bpf.c"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(newer, "newer.bpf.c"), src, 0o644)
	dirs = append(dirs, newer)
	for _, dir := range dirs {
		if r := f.cli("push", dir, "--wait"); r.code != 0 {
			t.Fatalf("push %s: %d %s", dir, r.code, r.stderr)
		}
	}

	var k61, k612 api.Kernel
	for _, p := range []struct {
		deb string
		k   *api.Kernel
	}{{deb61, &k61}, {deb612, &k612}} {
		var res api.KernelImport
		r := f.cli("kernels", "import", "--json", p.deb)
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res.Kernels) != 1 || !res.Kernels[0].Kernel.HasImage {
			t.Fatalf("import %s: %d %s %s", p.deb, r.code, r.stdout, r.stderr)
		}
		*p.k = res.Kernels[0].Kernel
	}
	img61, rel61 := debImage(t, deb61)
	img612, _ := debImage(t, deb612)
	if rel61 != k61.Release {
		t.Fatalf("release %s, kernel %s", rel61, k61.Release)
	}

	// The same 6.1 kernel under a btfhub-archive id, its image attached
	// with --image; and under a third id with a truncated image.
	code, btf61 := f.api("GET", "/api/v1/blobs/"+k61.BTF.Digest, f.admin, "", nil, nil)
	if code != 200 {
		t.Fatalf("BTF blob: %d", code)
	}
	hub := "ubuntu/22.04/x86_64/" + k61.Release
	broken := "centos/9/x86_64/" + k61.Release
	for _, kid := range []string{hub, broken} {
		tree := t.TempDir()
		writeBTFTarXz(t, filepath.Join(tree, kid+".btf.tar.xz"), k61.Release, btf61)
		if r := f.cli("kernels", "import", tree); r.code != 0 {
			t.Fatalf("import %s: %d %s", kid, r.code, r.stderr)
		}
	}
	if r := importImage(t, f, hub, img612); r.code != 1 || !strings.Contains(r.stderr, "not "+k61.Release) {
		t.Errorf("a 6.12 image for a 6.1 kernel: %d %q, want refused naming the releases", r.code, r.stderr)
	}
	if r := importImage(t, f, "debian/12/x86_64/6.1.0-99-cloud-amd64", img61); r.code != 1 {
		t.Errorf("an image for an unknown kernel: %d %q", r.code, r.stderr)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte(strings.Repeat("not a kernel\n", 1000)), 0o644)
	if r := importImage(t, f, hub, garbage); r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("a file that is no kernel image: %d %q, want refused in one line", r.code, r.stderr)
	}
	if r := importImage(t, f, hub, img61); r.code != 0 || !strings.Contains(r.stdout, "image attached") {
		t.Fatalf("kernels import --image: %d %s %s", r.code, r.stdout, r.stderr)
	}
	whole, err := os.ReadFile(img61)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "vmlinuz-truncated")
	os.WriteFile(truncated, whole[:len(whole)/2], 0o644)
	if r := importImage(t, f, broken, truncated); r.code != 0 {
		t.Fatalf("kernels import --image (truncated): %d %s %s", r.code, r.stdout, r.stderr)
	}
	var listed []api.Kernel
	f.api("GET", "/api/v1/kernels", f.admin, "", nil, &listed)
	for _, k := range listed {
		if !k.HasImage {
			t.Errorf("kernel %s has no image", k.ID)
		}
	}

	kernels := []string{k61.ID, k612.ID, hub, broken}
	all := map[string]map[string]api.Verification{} // program -> kernel
	for _, dir := range dirs {
		name := filepath.Base(dir)
		all[name] = map[string]api.Verification{}
		for _, v := range waitVerifications(t, f, name, len(kernels)) {
			all[name][v.Kernel] = v
			acc, total := v.Accepted()
			t.Logf("%s on %s: %s %s (%d/%d accepted, boot %dms, VM %dms, %s)", name, v.Kernel, v.Result, firstLine(v.Reason),
				acc, total, v.BootMS, v.DurationMS, v.Accel)
			for _, p := range v.Programs {
				t.Logf("    %s %s: accepted=%v insns=%d load=%.1fms %s", p.Mode, p.Program, p.Accepted, p.Instructions, p.LoadMS, p.Error)
			}
		}
	}
	for name, byKernel := range all {
		for _, kid := range []string{k61.ID, k612.ID, hub} {
			v := byKernel[kid]
			want := api.VerificationVerified
			if name == "newer" && kid != k612.ID {
				want = api.VerificationRejected
			}
			if v.Result != want || len(v.Programs) == 0 {
				t.Errorf("%s on %s: %s %q, want %s\n%s", name, kid, v.Result, v.Reason, want, v.Console)
			}
			if v.Release != k61.Release && v.Release != k612.Release {
				t.Errorf("%s on %s: booted release %q", name, kid, v.Release)
			}
		}
		if v := byKernel[broken]; v.Result != api.VerificationKernelError || v.Reason == "" || len(v.Programs) != 0 {
			t.Errorf("%s on the truncated image: %s %q, want a kernel-error with its reason", name, v.Result, v.Reason)
		}
	}
	// Exactly the difference: 6.1 rejects sext (its verifier's message)
	// and iter, accepts plain; 6.12 accepts all three.
	for _, p := range all["newer"][k61.ID].Programs {
		switch p.Program {
		case "plain":
			if !p.Accepted {
				t.Errorf("6.1 rejected plain (%s): %s", p.Mode, p.Error)
			}
		case "sext":
			if p.Accepted || !p.Verifier || !strings.Contains(p.Error, "BPF_MOV uses reserved fields") || len(p.Log) == 0 {
				t.Errorf("6.1 %s/sext: %+v, want the verifier's \"BPF_MOV uses reserved fields\"", p.Mode, p)
			}
		case "iter":
			if p.Accepted {
				t.Errorf("6.1 accepted iter (%s)", p.Mode)
			}
		}
	}
	if acc, total := func() (int, int) { v := all["newer"][k612.ID]; return v.Accepted() }(); acc != 3 || total != 3 {
		t.Errorf("6.12 accepted %d of %d programs of newer, want 3 of 3", acc, total)
	}

	// The artifact JSON and the re-signed manifest carry the verdicts.
	var arts []api.Artifact
	f.api("GET", "/api/v1/artifacts?program=newer&kernel="+k61.ID, f.admin, "", nil, &arts)
	if len(arts) != 1 || arts[0].Verification == nil || arts[0].Verification.Result != api.VerificationRejected {
		t.Fatalf("artifact JSON: %+v", arts)
	}
	out := t.TempDir()
	if r := f.cli("artifact", "get", "newer", "--kernel", k61.ID, "-o", out); r.code != 0 {
		t.Fatalf("artifact get: %d %s %s", r.code, r.stdout, r.stderr)
	}
	mb, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(mb)
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Verified["sext"]; v.Accepted || !strings.Contains(v.Error, "BPF_MOV uses reserved fields") {
		t.Errorf("manifest verified[sext] = %+v", v)
	}
	if v := m.Verified["plain"]; !v.Accepted || v.Instructions == 0 {
		t.Errorf("manifest verified[plain] = %+v", v)
	}

	// programs show: the verification columns.
	r := f.cli("programs", "show", "newer")
	if r.code != 0 || !strings.Contains(r.stdout, "verified on real kernels") || !strings.Contains(r.stdout, "BPF_MOV uses reserved fields") {
		t.Errorf("programs show newer: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("programs show newer:\n%s", r.stdout)
	r = f.cli("programs", "show", "schedcount")
	if r.code != 0 || !strings.Contains(r.stdout, "kernel-error") || !strings.Contains(r.stdout, "accepted") {
		t.Errorf("programs show schedcount: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The agent's --require-verified check.
	var key api.SigningKey
	f.api("GET", "/api/v1/signing-key", f.admin, "", nil, &key)
	pub, _ := base64.StdEncoding.DecodeString(key.PublicKey)
	c, err := client.New(f.url, f.admin)
	if err != nil {
		t.Fatal(err)
	}
	opt := client.FetchOptions{PublicKey: pub, RequireVerified: true, Attempts: 1}
	ctx := context.Background()
	if _, err := c.FetchArtifact(ctx, "schedcount", k61.ID, "", opt); err != nil {
		t.Errorf("schedcount, verified on %s: %v", k61.ID, err)
	}
	if _, err := c.FetchArtifact(ctx, "newer", k61.ID, "", opt); err == nil || !strings.Contains(err.Error(), "sext (relocated: BPF_MOV uses reserved fields)") {
		t.Errorf("newer on 6.1 with --require-verified: %v, want refused naming sext", err)
	}
	o := opt
	o.VerifiedPrograms = []string{"plain"}
	if _, err := c.FetchArtifact(ctx, "newer", k61.ID, "", o); err != nil {
		t.Errorf("newer's plain only, on 6.1: %v", err)
	}
	if _, err := c.FetchArtifact(ctx, "schedcount", broken, "", opt); err == nil {
		t.Error("an artifact whose kernel did not boot passed --require-verified")
	}
	if _, err := c.FetchArtifact(ctx, "schedcount", "ubuntu/24.04/x86_64/"+k612.Release, "", opt); err == nil ||
		!strings.Contains(err.Error(), "is for kernel "+k612.ID) {
		t.Errorf("a kernel matched by release only: %v, want refused", err)
	}
}

// TestVerifyTimeoutAndRestart: a kernel that hangs (a corrupted image) is
// a timeout after --verify-timeout, also after the server was killed
// during the verification and restarted; qemu dies with the server; and
// the next verification runs.
func TestVerifyTimeoutAndRestart(t *testing.T) {
	deb61 := testenv.DebianKernel(t, "6.1")
	runner := verifierRunner(t)
	data := t.TempDir()
	f := startFarm(t, data, "--verifier", runner, "--verify-vms", "1", "--verify-timeout", "30s")
	img, release := debImage(t, deb61)
	// The 6.1 kernel under another id, with a corrupted image: the
	// decompressor halts, the VM prints nothing more and hangs. The
	// program comes after, so that the good image is never verified.
	kid := "hang/1/x86_64/" + release
	if r := f.cli("kernels", "import", deb61, "--id", kid); r.code != 0 {
		t.Fatalf("import: %d %s", r.code, r.stderr)
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(raw) / 2; i < len(raw)/2+4096; i++ {
		raw[i] ^= 0x55
	}
	corrupt := filepath.Join(t.TempDir(), "vmlinuz-corrupt")
	os.WriteFile(corrupt, raw, 0o644)
	if r := importImage(t, f, kid, corrupt); r.code != 0 {
		t.Fatalf("attach corrupt image: %d %s", r.code, r.stderr)
	}
	if r := f.cli("push", filepath.Join(repoRoot(t), "examples", "schedcount"), "--wait"); r.code != 0 {
		t.Fatalf("push: %d %s", r.code, r.stderr)
	}

	// Kill the server while the VM hangs.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var vs []api.Verification
		f.api("GET", "/api/v1/verifications?state=running", f.admin, "", nil, &vs)
		if len(vs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the verification never started")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if qemuOf(data) == 0 {
		t.Error("no qemu running for the verification")
	}
	f.kill9()
	deadline = time.Now().Add(30 * time.Second)
	for qemuOf(data) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("qemu outlived the killed server")
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.start()

	vs := waitVerifications(t, f, "schedcount", 1)
	if v := vs[0]; v.Result != api.VerificationTimeout || v.Attempts != 2 || !strings.Contains(v.Reason, "30s") {
		t.Errorf("after the restart: %s %q, attempts %d; want a timeout on the second attempt", v.Result, v.Reason, v.Attempts)
	}
	if qemuOf(data) != 0 {
		t.Error("qemu still runs after the timeout")
	}
	// The next verification runs: the same kernel with a good image.
	if r := importImage(t, f, kid, img); r.code != 0 {
		t.Fatalf("attach the good image: %d %s", r.code, r.stderr)
	}
	deadline = time.Now().Add(5 * time.Minute)
	for {
		vs = waitVerifications(t, f, "schedcount", 1)
		if vs[0].Result == api.VerificationVerified {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the good image: %+v", vs[0])
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// qemuOf counts the qemu processes whose command line names a file under
// data (the farm's initramfs files).
func qemuOf(data string) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "qemu-system") && strings.Contains(cmd, data) {
			n++
		}
	}
	return n
}
