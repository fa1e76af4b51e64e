package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// Fleet scale: how many real kernels the benchmark imports, at least, and
// how many of each (arch, series, flavour) it takes.
const (
	fleetMinKernels = 30
	fleetDownloads  = 4 // parallel apt-get downloads
	// fleetKernelsEnv, set to N, runs on the N smallest packages only.
	fleetKernelsEnv = "BPFARM_FLEET_KERNELS"
	// fleetKeepEnv, set to a directory, keeps a copy of the imported
	// archive there; fleetDataEnv, set to such a directory, skips the
	// download and the import and measures the fan-out over that archive.
	fleetKeepEnv = "BPFARM_FLEET_KEEP"
	fleetDataEnv = "BPFARM_FLEET_DATA"
)

// BenchmarkFleet imports at least 30 distinct real Debian kernel packages
// (6.1 and 6.12; generic, cloud and rt; amd64 and arm64), downloaded into
// the kernel cache in parallel, into a real server process, and measures:
// import throughput; disk per kernel (blobs shared by digest; the CO-RE
// object is stored once per build, never per kernel: checked); the
// server's peak RSS during the import and during the fan-out; and the
// fan-out of one push (one build per arch) over every kernel, from a
// freshly started server so that every kernel's BTF parse is included,
// with that fan-out extrapolated to 1000 kernels (parses are per kernel
// and the parse cache is bounded, so the time is linear in the kernels
// and the memory is not).
func BenchmarkFleet(b *testing.B) {
	requireTools(b)
	if dir := os.Getenv(fleetDataEnv); dir != "" {
		// Fan-out only, over an archive imported earlier.
		for b.Loop() {
			data := b.TempDir()
			copyArchive(b, dir, data)
			fleetFanout(b, data, 0)
		}
		return
	}
	all, err := testenv.DebianKernelPackages([]string{"6.1", "6.12"}, []string{"amd64", "arm64"})
	if err != nil {
		testenv.Require(b, "Debian kernel packages", err.Error())
	}
	pkgs := pickFleet(all)
	if v := os.Getenv(fleetKernelsEnv); v != "" {
		// A quick run on the n smallest packages (BENCHMARKS.md then shows
		// the kernel count under its minimum).
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("$%s=%q: want a number of kernels", fleetKernelsEnv, v)
		}
		slices.SortStableFunc(pkgs, func(a, b testenv.DebianPackage) int { return cmp.Compare(a.Size, b.Size) })
		pkgs = pkgs[:min(n, len(pkgs))]
	} else if len(pkgs) < fleetMinKernels {
		testenv.Require(b, fmt.Sprintf("%d Debian kernel packages", fleetMinKernels),
			fmt.Sprintf("apt knows %d (picked %d); arm64 ones need dpkg --add-architecture arm64 && apt-get update (make deps)", len(all), len(pkgs)))
	}
	var size int64
	for _, p := range pkgs {
		size += p.Size
	}
	b.Logf("%d kernel packages (%.0f MB): fetching, %d at a time", len(pkgs), float64(size)/1e6, fleetDownloads)
	start := time.Now()
	debs, downloaded, err := testenv.FetchDebianKernels(pkgs, fleetDownloads, func(p testenv.DebianPackage, _ string, cached bool, err error) {
		if err == nil && !cached {
			b.Logf("downloaded %s:%s (%.0f MB)", p.Name, p.Arch, float64(p.Size)/1e6)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("packages ready in %s (%.0f MB downloaded now)", time.Since(start).Round(time.Millisecond), float64(downloaded)/1e6)
	var debBytes int64
	for _, d := range debs {
		st, err := os.Stat(d)
		if err != nil {
			b.Fatal(err)
		}
		debBytes += st.Size()
	}

	for b.Loop() {
		data := b.TempDir()
		fleetImport(b, data, debs, debBytes)
		if keep := os.Getenv(fleetKeepEnv); keep != "" {
			copyArchive(b, data, keep)
			b.Logf("archive kept in %s (%s=%s runs the fan-out on it)", keep, fleetDataEnv, keep)
		}
		fleetFanout(b, data, 0)
	}
}

// pickFleet picks the fleet: every cloud package (the most common kernels
// of a cloud fleet, and the cheapest to import), and one generic and one
// rt package per arch (the newest of one series), so that both arches, both
// series and the three flavours are there.
func pickFleet(all []testenv.DebianPackage) []testenv.DebianPackage {
	var out []testenv.DebianPackage
	big := map[string]string{ // flavour/arch → series
		"generic/amd64": "6.12", "generic/arm64": "6.1", "rt/amd64": "6.12", "rt/arm64": "6.1",
	}
	for _, p := range all {
		switch {
		case p.Flavour == "cloud":
			out = append(out, p)
		case big[p.Flavour+"/"+p.Arch] == p.Series:
			out = append(out, p)
			delete(big, p.Flavour+"/"+p.Arch) // the newest only
		}
	}
	return out
}

// fleetImport imports the packages into a fresh server on data, two
// uploads at a time (the server imports each on its own goroutine; 2
// cores).
func fleetImport(b *testing.B, data string, debs []string, debBytes int64) {
	ctx := context.Background()
	srv := startFleetServer(b, data)
	defer srv.stop()
	before, err := srv.client.Kernels(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	sem := make(chan struct{}, 2)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []string
	)
	for _, d := range debs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			f, err := os.Open(d)
			if err != nil {
				b.Error(err)
				return
			}
			defer f.Close()
			if _, err := srv.client.ImportKernelFile(ctx, d, f, client.ImportOptions{}); err != nil {
				// A package the importer refuses is reported, and the
				// others measured.
				var ae *client.APIError
				if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
					b.Errorf("import %s: %v", filepath.Base(d), err)
					return
				}
				mu.Lock()
				refused = append(refused, filepath.Base(d))
				mu.Unlock()
				b.Logf("REFUSED %s: %v", filepath.Base(d), err)
			}
		}()
	}
	wg.Wait()
	importTime := time.Since(start)
	importCPU := srv.cpu(b)
	importRSS := srv.peakRSS(b)
	kernels, err := srv.client.Kernels(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	n := len(kernels) - len(before)
	if n != len(debs)-len(refused) {
		b.Fatalf("%d kernels imported from %d distinct packages (%d refused)", n, len(debs), len(refused))
	}
	b.ReportMetric(float64(len(refused)), "import-refused")
	kernelDisk, kernelBlobs := dirSize(b, filepath.Join(data, "blobs"))
	b.Logf("imported %d kernels in %s (server CPU %s): %.2f kernels/s, %.1f MB/s of packages; blobs %.0f MB in %d files; peak RSS %.0f MB",
		n, importTime.Round(time.Millisecond), importCPU.Round(time.Millisecond), float64(n)/importTime.Seconds(),
		float64(debBytes)/1e6/importTime.Seconds(), float64(kernelDisk)/1e6, kernelBlobs, importRSS)
	b.ReportMetric(float64(n)/importTime.Seconds(), "import-kernels/s")
	b.ReportMetric(float64(debBytes)/1e6/importTime.Seconds(), "import-MB/s")
	b.ReportMetric(float64(importTime.Nanoseconds())/float64(n), "import-ns/kernel")
	b.ReportMetric(float64(importCPU.Nanoseconds())/float64(n), "import-cpu-ns/kernel")
	b.ReportMetric(importRSS, "import-peak-rss-MB")
}

// fleetFanout pushes one program for every arch of the archive on data to
// a freshly started server (nothing parsed yet) and measures its fan-out
// over every kernel. want, when not 0, is the number of kernels expected.
func fleetFanout(b *testing.B, data string, want int) {
	ctx := context.Background()
	kernelDisk, kernelBlobs := dirSize(b, filepath.Join(data, "blobs"))
	srv := startFleetServer(b, data)
	defer srv.stop()
	kernels, err := srv.client.Kernels(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	n := len(kernels)
	if want != 0 && n < want {
		b.Fatalf("%d kernels in the archive, want %d", n, want)
	}
	perArch := map[string]int{}
	for _, k := range kernels {
		perArch[k.Arch]++
	}
	args := []string{"push", filepath.Join(repoRoot(b), "examples", "execsnoop")}
	for a := range perArch {
		args = append(args, "--arch", a)
	}
	cpu0 := srv.cpu(b)
	pushStart := time.Now()
	if out, err := srv.cli(args...); err != nil {
		b.Fatalf("push: %v: %s", err, out)
	}
	// Sample the server's CPU time when every build is done and when
	// every relocation is: the difference, over the relocations between,
	// is the marginal cost of one more kernel, parse included.
	var (
		built      bool
		cpuBuilt   time.Duration
		relocBuilt float64
	)
	for {
		m := srv.metrics(b)
		builds := m[`bpfarm_builds_total{result="succeeded"}`] + m[`bpfarm_builds_total{result="failed_user"}`] +
			m[`bpfarm_builds_total{result="failed_internal"}`]
		reloc := m[`bpfarm_relocation_duration_seconds_count`]
		if !built && builds >= float64(len(perArch)) {
			built, cpuBuilt, relocBuilt = true, srv.cpu(b), reloc
		}
		if int(reloc) >= n {
			break
		}
		if time.Since(pushStart) > 20*time.Minute {
			b.Fatalf("%v relocations of %d after %s", reloc, n, time.Since(pushStart))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cpuAll := srv.cpu(b)
	pushToAll := time.Since(pushStart)
	fanoutRSS := srv.peakRSS(b)

	arts, err := srv.client.Artifacts(ctx, "execsnoop", "")
	if err != nil {
		b.Fatal(err)
	}
	builds, err := srv.client.Builds(ctx, "execsnoop")
	if err != nil {
		b.Fatal(err)
	}
	var firstBuilt, lastDone time.Time
	for _, bd := range builds {
		if bd.FinishedAt != nil && (firstBuilt.IsZero() || bd.FinishedAt.Before(firstBuilt)) {
			firstBuilt = *bd.FinishedAt
		}
	}
	objects, minBTFs, relocated := map[string]bool{}, map[string]bool{}, map[string]bool{}
	statuses := map[string]int{}
	for _, a := range arts {
		if a.FinishedAt != nil && a.FinishedAt.After(lastDone) {
			lastDone = *a.FinishedAt
		}
		if a.State != api.ArtifactDone {
			b.Errorf("artifact for %s: %s %s", a.Kernel, a.State, a.Error)
			continue
		}
		statuses[a.Status]++
		objects[a.Object.Digest] = true
		minBTFs[a.MinBTF.Digest] = true
		relocated[a.Relocated.Digest] = true
	}
	if len(arts) != n {
		b.Fatalf("%d artifacts for %d kernels", len(arts), n)
	}
	if len(objects) != len(builds) {
		b.Errorf("%d distinct CO-RE objects across %d artifacts of %d builds: want one per build", len(objects), len(arts), len(builds))
	}
	totalDisk, totalBlobs := dirSize(b, filepath.Join(data, "blobs"))
	artifactDisk := totalDisk - kernelDisk
	dbSize := fileSize(filepath.Join(data, "bpfarm.db")) + fileSize(filepath.Join(data, "bpfarm.db-wal"))

	// Wall time, as measured on this machine (shared: see the load).
	fanout := lastDone.Sub(firstBuilt)
	per := fanout / time.Duration(n)
	// CPU time: the builds' share (server side; clang and bpftool run in
	// child processes) is paid once per push, the rest once per kernel.
	marginal := time.Duration(0)
	if k := float64(n) - relocBuilt; k > 0 {
		marginal = time.Duration(float64(cpuAll-cpuBuilt) / k)
	}
	fixed := max(cpuBuilt-cpu0-time.Duration(relocBuilt*float64(marginal)), 0)
	cpu1000 := (fixed + 1000*marginal) / 2 // 2 relocators on 2 cores
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("fan-out over %d kernels (%v; %v): %s from the first build's end (%s per kernel; push to last artifact %s); "+
		"server CPU %s: %s for the builds, %s per kernel (marginal, over the %d relocations after the last build); "+
		"extrapolated to 1000 kernels: %s from wall time as measured, %s from CPU time on 2 idle cores; peak RSS %.0f MB; load average %s",
		n, perArch, statuses, fanout.Round(time.Millisecond), per.Round(10*time.Microsecond), pushToAll.Round(time.Millisecond),
		(cpuAll - cpu0).Round(time.Millisecond), fixed.Round(time.Millisecond), marginal.Round(10*time.Microsecond), n-int(relocBuilt),
		(per * 1000).Round(100*time.Millisecond), cpu1000.Round(100*time.Millisecond), fanoutRSS, strings.TrimSpace(string(load)))
	b.Logf("disk: kernels %.1f MB per kernel (%d blobs); artifacts %.1f KB per kernel (%d blobs, %d distinct minimized BTF, %d distinct relocated objects, %d objects for %d builds); database %.1f MB",
		float64(kernelDisk)/1e6/float64(n), kernelBlobs, float64(artifactDisk)/1e3/float64(n), totalBlobs-kernelBlobs, len(minBTFs), len(relocated),
		len(objects), len(builds), float64(dbSize)/1e6)

	b.ReportMetric(float64(n), "kernels")
	b.ReportMetric(float64(kernelDisk)/1e6/float64(n), "kernel-disk-MB/kernel")
	b.ReportMetric(float64(artifactDisk)/1e3/float64(n), "artifact-disk-KB/kernel")
	b.ReportMetric(float64(len(objects)), "object-blobs")
	b.ReportMetric(float64(fanout.Milliseconds()), "fanout-ms")
	b.ReportMetric(float64(per.Nanoseconds()), "fanout-ns/kernel")
	b.ReportMetric(per.Seconds()*1000, "fanout-1000-s")
	b.ReportMetric(float64(marginal.Nanoseconds()), "fanout-cpu-ns/kernel")
	b.ReportMetric(float64(fixed.Nanoseconds()), "fanout-cpu-builds-ns")
	b.ReportMetric(cpu1000.Seconds(), "fanout-1000-cpu-s")
	b.ReportMetric(fanoutRSS, "fanout-peak-rss-MB")
	b.ReportMetric(float64(pushToAll.Milliseconds()), "push-to-all-ms")
}

// copyArchive copies a server's archive (database, keys, blobs) from src
// to dst; blobs are hard links when they can be (they never change).
func copyArchive(b *testing.B, src, dst string) {
	b.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"bpfarm.db", "bpfarm.db-wal", "admin.token", "signing.key"} {
		raw, err := os.ReadFile(filepath.Join(src, name))
		if errors.Is(err, fs.ErrNotExist) && name == "bpfarm.db-wal" {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), raw, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	err := filepath.WalkDir(filepath.Join(src, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if os.Link(p, to) == nil {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, raw, 0o644)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// fleetServer is a bpfarm server process for the fleet benchmark.
type fleetServer struct {
	url, token string
	cmd        *exec.Cmd
	client     *client.Client
	log        *strings.Builder
}

func startFleetServer(b *testing.B, data string) *fleetServer {
	b.Helper()
	addr := testenv.FreeAddr(b)
	s := &fleetServer{url: "http://" + addr, log: &strings.Builder{}}
	s.cmd = exec.Command(bpfarmBin, "serve", "--addr", addr, "--data", data, "--workers", "2", "--log-level", "warn",
		"--verify-vms=-1")
	s.cmd.Stdout, s.cmd.Stderr = &lockedWriter{w: s.log}, &lockedWriter{w: s.log}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.stop)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("server did not become ready: %v\n%s", err, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		b.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	if s.client, err = client.New(s.url, s.token); err != nil {
		b.Fatal(err)
	}
	return s
}

func (s *fleetServer) cli(args ...string) (string, error) {
	cmd := exec.Command(bpfarmBin, args...)
	cmd.Env = append(os.Environ(), "BPFARM_SERVER="+s.url, "BPFARM_TOKEN="+s.token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cpu returns the CPU time (user and system) the server has used so far:
// unlike wall time, it does not depend on what else the machine runs.
func (s *fleetServer) cpu(b *testing.B) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15, in clock ticks (100 per second).
	_, rest, ok := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		b.Fatalf("/proc/PID/stat: %q", raw)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// metrics returns the server's Prometheus samples by name and labels.
func (s *fleetServer) metrics(b *testing.B) map[string]float64 {
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// peakRSS returns the server's peak resident set size (VmHWM) in MB.
func (s *fleetServer) peakRSS(b *testing.B) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

func (s *fleetServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// lockedWriter serializes writes from the process's two streams.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() < 1<<20 {
		l.w.Write(p)
	}
	return len(p), nil
}

// dirSize returns the bytes and the number of the regular files under dir.
func dirSize(b *testing.B, dir string) (int64, int) {
	var total int64
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
			n++
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total, n
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}
