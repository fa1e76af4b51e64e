//go:build linux

package farmtest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/farmtest"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

func TestMain(m *testing.M) { farmtest.Main(m) }

// settleLimit bounds the wait for a farm to finish its work after the
// kills (leases to run out, builds and relocations to run again); it is a
// guard against hanging, not a timing assertion.
const settleLimit = 6 * time.Minute

// repoRoot returns the repository's root directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// hostBTF copies this host's kernel BTF (/sys/kernel/btf/vmlinux, real
// kernel BTF) to a file and returns its path and the host's arch.
func hostBTF(t testing.TB) (string, string) {
	t.Helper()
	h, err := kernel.Host()
	if err != nil || !h.HasBTF {
		testenv.Require(t, "kernel BTF", fmt.Sprintf("this host's kernel BTF is imported into the farm's archive (%v)", err))
	}
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		testenv.Require(t, "kernel BTF", err.Error())
	}
	p := filepath.Join(t.TempDir(), "vmlinux.btf")
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, h.ID.Arch
}

// variant copies the example program prog into a new directory, its
// .bpf.c files changed by a comment naming tag, and returns the
// directory: a new revision of the program.
func variant(t testing.TB, prog, tag string) string {
	t.Helper()
	src := filepath.Join(repoRoot(t), "examples", prog)
	dst := filepath.Join(t.TempDir(), prog)
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	c, err := filepath.Glob(filepath.Join(dst, "*.bpf.c"))
	if err != nil || len(c) == 0 {
		t.Fatalf("no .bpf.c in %s: %v", src, err)
	}
	for _, p := range c {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, append(b, "\n/* farmtest "+tag+" */\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// debianBTF extracts the vmlinux BTF of a real Debian kernel package
// (the cached 6.1 cloud amd64 one) and returns its path and the kernel's
// id: imported as raw BTF, it costs the farm a fraction of the package's
// import, so that imports finish between kills. The BTF and the id are
// kept next to the package (reading the package takes a while).
func debianBTF(t testing.TB) (string, string) {
	t.Helper()
	deb := testenv.DebianKernel(t, "6.1")
	path, idPath := deb+".farmtest.btf", deb+".farmtest.id"
	if id, err := os.ReadFile(idPath); err == nil {
		if _, err := os.Stat(path); err == nil {
			return path, strings.TrimSpace(string(id))
		}
	}
	var id string
	err := source.Import(context.Background(), deb, source.Options{TempDir: t.TempDir()}, func(k *source.Kernel) error {
		id = k.ID.String()
		return writeFileAtomic(path, k.BTF)
	})
	if err == nil {
		err = writeFileAtomic(idPath, []byte(id+"\n"))
	}
	if err != nil {
		t.Fatalf("read %s: %v", deb, err)
	}
	return path, id
}

// writeFileAtomic writes a file under its final name by rename, so that
// tests running at once never read half of it.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".farmtest-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// workload is what the random-kill tests do to a farm while they kill its
// processes: pushes of real programs (each revision a real clang build),
// kernel imports (real kernels' BTF: this host's and a Debian kernel's,
// under new ids) and the fan-out both imply (every build relocated for
// every kernel of its arch). It goes through the CLI with every API
// server (--server a,b), as an operator would, and sends a call that
// failed (it reached a process as it was killed) again.
type workload struct {
	f *farmtest.Farm
	// btf is this host's BTF, imported as arch kernels named by the
	// test; debBTF is a real Debian kernel's, imported as debID with a
	// suffix.
	btf, arch, debBTF, debID string
	pushOK, importOK         atomic.Int64
	pushErr, importErr       atomic.Int64
}

// run runs the workload until stop is closed.
func (w *workload) run(ctx context.Context, t *testing.T, stop <-chan struct{}) {
	var wg sync.WaitGroup
	progs := []string{"execsnoop", "schedcount"}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			if !pause(ctx, stop, time.Duration(1000+rand.IntN(2000))*time.Millisecond) {
				return
			}
			prog := progs[i%len(progs)]
			w.retry(ctx, t, stop, &w.pushOK, &w.pushErr, fmt.Sprintf("push %s #%d", prog, i), "push", variant(t, prog, fmt.Sprint(i)),
				"--name", prog, "--json")
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			if !pause(ctx, stop, time.Duration(1000+rand.IntN(2000))*time.Millisecond) {
				return
			}
			args := []string{"kernels", "import", w.btf, "--id", fmt.Sprintf("farmtest/1/%s/6.0.%d-farmtest", w.arch, i+1)}
			if i%2 == 1 {
				args = []string{"kernels", "import", w.debBTF, "--id", fmt.Sprintf("%s-farmtest%d", w.debID, i)}
			}
			w.retry(ctx, t, stop, &w.importOK, &w.importErr, fmt.Sprintf("kernels import #%d", i), args...)
		}
	}()
	wg.Wait()
}

// retry runs the CLI with args until it succeeds or stop is closed: a
// call that reached a process as it was killed fails, and is sent again,
// as an operator (or a script) would. Every failure is counted.
func (w *workload) retry(ctx context.Context, t *testing.T, stop <-chan struct{}, ok, failed *atomic.Int64, what string, args ...string) {
	for attempt := 1; ; attempt++ {
		r := w.f.CLI(ctx, args...)
		if r.Code == 0 {
			ok.Add(1)
			return
		}
		failed.Add(1)
		t.Logf("%s (attempt %d): exit %d: %s", what, attempt, r.Code, firstLine(r.Stderr))
		if !pause(ctx, stop, 500*time.Millisecond) {
			return
		}
	}
}

// killer kills processes of the farm with SIGKILL at random moments, n
// times, each time starting the process again after a moment. pick
// chooses the victim.
func killer(ctx context.Context, t *testing.T, f *farmtest.Farm, n int, pick func() *farmtest.Proc) (midCompile int) {
	for i := range n {
		if !sleep(ctx, time.Duration(300+rand.IntN(2000))*time.Millisecond) {
			t.Fatalf("killer: stopped after %d kills: %v", i, ctx.Err())
		}
		p := pick()
		busy := len(p.Children()) > 0
		if busy {
			midCompile++
		}
		p.Kill()
		down := time.Duration(rand.IntN(1000)) * time.Millisecond
		sleep(ctx, down)
		t0 := time.Now()
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d/%d: %s (compiling: %v), down %s, ready again in %s", i+1, n, p.Name, busy, down, time.Since(t0).Round(time.Millisecond))
	}
	return midCompile
}

// chaos runs the workload on f while killing its processes n times at
// random (pick chooses each victim), then checks the farm once it
// settles: every build ended succeeded or failed, every succeeded build
// has an artifact (or a recorded failure) for every kernel of its arch,
// and no row names a blob missing from the blob store, looked at through
// the API and directly.
func chaos(t *testing.T, f *farmtest.Farm, kills int, pick func() *farmtest.Proc) {
	btf, arch := hostBTF(t)
	t0 := time.Now()
	debBTF, debID := debianBTF(t)
	t.Logf("BTF of %s read in %s", debID, time.Since(t0).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The reference kernel (the vmlinux.h of compiles) stays the same
	// whatever the imports: each push compiles once, with the PCH.
	ref := fmt.Sprintf("farmtest/1/%s/6.0.0-farmtest", arch)
	for _, args := range [][]string{{"kernels", "import", btf, "--id", ref}, {"kernels", "pin", ref}} {
		if r := f.CLI(ctx, args...); r.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.Code, r.Stderr)
		}
	}
	w := &workload{f: f, btf: btf, arch: arch, debBTF: debBTF, debID: debID}
	start := time.Now()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, t, stop)
	}()
	mid := killer(ctx, t, f, kills, pick)
	close(stop)
	<-done
	t.Logf("%d kills (%d while compiling) in %s; pushes %d accepted, %d failed; imports %d accepted, %d failed",
		kills, mid, time.Since(start).Round(time.Millisecond), w.pushOK.Load(), w.pushErr.Load(), w.importOK.Load(), w.importErr.Load())
	if w.pushOK.Load() == 0 || w.importOK.Load() == 0 {
		t.Fatalf("the workload got nothing accepted: pushes %d, imports %d", w.pushOK.Load(), w.importOK.Load())
	}

	settle := time.Now()
	a, err := f.WaitSettled(ctx, settleLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("settled %s after the last kill: %s", time.Since(settle).Round(time.Millisecond), a)
	for _, fb := range a.FailedBuilds {
		t.Logf("failed: %s", fb)
	}
	if err := a.Err(); err != nil {
		t.Error(err)
	}
	if a.Succeeded == 0 || a.Artifacts == 0 {
		t.Errorf("nothing to check: %s", a)
	}
	n, err := f.AuditBlobRefs(ctx)
	if err != nil {
		t.Error(err)
	}
	t.Logf("%d blobs named by the database, all in the blob store", n)
}

// TestRandomKillsSQLite is the random-kill test on the embedded default
// (make run): one process, SQLite and a local blob directory, killed 20
// times during pushes, imports and fan-out, and started again each time.
func TestRandomKillsSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a farm 20 times (minutes)")
	}
	f := farmtest.Start(t, farmtest.Config{Args: []string{"--workers", "2", "--relocators", "2"}})
	chaos(t, f, 20, func() *farmtest.Proc { return f.Procs[0] })
}

// firstLine returns s's first line.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// pause waits d, or until ctx is done or stop closed; it reports whether
// neither happened.
func pause(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	default:
	}
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}

// sleep waits d or until ctx is done; it reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
