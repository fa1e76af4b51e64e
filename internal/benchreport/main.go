// Command benchreport runs bpfarm's benchmarks and writes BENCHMARKS.md:
// every figure measured in the same run as the alternative it is compared
// with (bare clang, bpftool, …), as a ratio against the budget.
//
//	go run ./internal/benchreport -o BENCHMARKS.md
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// group is one `go test -bench` invocation.
type group struct {
	pkg, pattern, benchtime string
	count                   int
}

var groups = []group{
	{"./bpfsrc/compile/", "^BenchmarkCompile", "5x", 3},
	{"./server/", "^BenchmarkPushCacheHit$", "200x", 3},
	{"./bpfsrc/elfstrip/", "^BenchmarkStripDebug$", "", 1},
	{"./server/blob/", "^Benchmark(Put|Get)", "30x", 1},
	{"./btf/core/", ".", "", 1},
	{"./btf/source/", ".", "", 1},
	{"./cmd/bpfarm-agent/", "^Benchmark(AgentLoad|HostCompileLoad|AgentBinary|AgentDaemonRSS)$", "10x", 3},
	{"./cmd/bpfarm-agent/", "^BenchmarkAgentExportRSS$", "5x", 1},
	{"./client/export/", "^BenchmarkExportScrape$", "3x", 1},
	{"./client/", "^Benchmark(CheckArtifact|ManifestVerify)$", "", 3},
	{"./verify/", "^BenchmarkVerify$", "1x", 1},
	{"./web/", "^BenchmarkRenderPages$", "", 1},
	{"./client/observe/", "^BenchmarkEvents$", "1000000x", 3},
	{"./cmd/bpfarm/", "^BenchmarkFleet$", "1x", 1},
	{"./server/store/", "^BenchmarkNotify$", "200x", 3},
	{"./server/store/", "^BenchmarkStore$", "200x", 3},
	{"./internal/farmtest/", "^BenchmarkFarm", "1x", 1},
}

// result is a benchmark's median over its runs: ns/op plus custom metrics.
type result map[string]float64

// comparison states a budget: ours/theirs (or an absolute value) against a
// limit.
type comparison struct {
	section, what string
	ours          string // "pkg:Benchmark" or "pkg:Benchmark:metric"
	theirs        string // empty for an absolute budget
	kind          string // "ratio<=", "speedup>=", "abs<=ms", "ratio<=pct", "gain" (ours/theirs, no budget), "info"
	budget        float64
	note          string
}

var comparisons = []comparison{
	{"Compile service", "sandboxed compile vs bare clang-19 (same source, no PCH)",
		"bpfsrc/compile:BenchmarkCompileSandbox", "bpfsrc/compile:BenchmarkCompileBare", "ratio<=", 1.15, ""},
	{"Compile service", "compile with the precompiled vmlinux.h (sandboxed) vs bare clang-19 with the plain vmlinux.h",
		"bpfsrc/compile:BenchmarkCompileSandboxPCH", "bpfsrc/compile:BenchmarkCompileBare", "ratio<=", 0.5,
		"a new program's compile once the farm holds the PCH for that vmlinux.h digest"},
	{"Compile service", "first compile after a new vmlinux.h (builds the PCH, then compiles) vs bare clang-19",
		"bpfsrc/compile:BenchmarkCompileSandboxPCHCold", "bpfsrc/compile:BenchmarkCompileBare", "info", 0,
		"paid once per vmlinux.h digest (kernel BTF), not per program"},
	{"Compile service", "strip DWARF from a compiled object in Go (execsnoop, 643 KB → 30 KB), replacing a sandboxed llvm-strip run (~16 ms)",
		"bpfsrc/elfstrip:BenchmarkStripDebug", "", "info", 0, ""},
	{"Compile service", "cache-hit push round trip on loopback (bundle, upload, validate, digest, cache lookup, answer)",
		"server:BenchmarkPushCacheHit", "", "abs<=ms", 20, ""},
	{"Blob store", "local directory Put 1 MiB (fsync)", "server/blob:BenchmarkPut/local", "", "info", 0, ""},
	{"Blob store", "S3 (real MinIO on loopback) Put 1 MiB", "server/blob:BenchmarkPut/s3", "", "info", 0, ""},
	{"Blob store", "local directory Get 1 MiB", "server/blob:BenchmarkGet/local", "", "info", 0, ""},
	{"Blob store", "S3 (real MinIO on loopback) Get 1 MiB", "server/blob:BenchmarkGet/s3", "", "info", 0, ""},
	{"Blob store", "S3 Put 1 MiB under the deadlines decorator (per-call and stall deadlines) vs without",
		"server/blob:BenchmarkPut/s3-deadlines", "server/blob:BenchmarkPut/s3", "ratio<=", 1.05, ""},
	{"Blob store", "S3 Get 1 MiB under the deadlines decorator vs without",
		"server/blob:BenchmarkGet/s3-deadlines", "server/blob:BenchmarkGet/s3", "ratio<=", 1.05, ""},
	{"Blob store", "local directory Get 1 MiB under the deadlines decorator vs without",
		"server/blob:BenchmarkGet/local-deadlines", "server/blob:BenchmarkGet/local", "ratio<=", 1.05, ""},
	{"BTF archive", "parse this host's vmlinux BTF (paid once per kernel, then cached)", "btf/core:BenchmarkLoadKernel/host", "", "info", 0, ""},
	{"BTF archive", "parse Debian 6.12's BTF with its ~1100 modules' split BTF", "btf/core:BenchmarkLoadKernel/debian-6.12-with-modules", "", "info", 0, ""},
	{"BTF archive", "read a kernel's BPF features from its BTF (enums bpf_map_type, bpf_prog_type, bpf_attach_type, bpf_func_id; once per parsed kernel)",
		"btf/core:BenchmarkKernelFeatures/host", "", "abs<=ms", 10, ""},
	{"BTF archive", "the same for Debian 6.12 with module BTF", "btf/core:BenchmarkKernelFeatures/debian-6.12-with-modules", "", "abs<=ms", 10, ""},
	{"BTF archive", "kernel features vs parsing the kernel's BTF, which they add to (host)",
		"btf/core:BenchmarkKernelFeatures/host", "btf/core:BenchmarkLoadKernel/host", "ratio<=", 0.5, ""},
	{"BTF archive", "per-kernel marginal cost: relocation report + minimized BTF + pre-relocated object (execsnoop, BTF parsed)",
		"btf/core:BenchmarkRelocate/execsnoop", "", "abs<=ms", 10, ""},
	{"BTF archive", "the same against Debian 6.12 with module BTF", "btf/core:BenchmarkRelocateModules", "", "abs<=ms", 10, ""},
	{"BTF archive", "ours vs `bpftool gen min_core_btf` per kernel (separate benchmarks)",
		"btf/core:BenchmarkRelocate/execsnoop", "btf/core:BenchmarkBpftoolMinCoreBTF", "speedup>=", 3, ""},
	{"BTF archive", "ours vs `bpftool gen min_core_btf`, timed in one loop", "btf/core:BenchmarkVersusTools:x-faster-than-bpftool", "", "metric>=", 3, ""},
	{"BTF archive", "ours vs compiling per kernel with clang-19 (separate benchmarks)",
		"btf/core:BenchmarkRelocate/execsnoop", "btf/core:BenchmarkClangPerKernel", "speedup>=", 50, ""},
	{"BTF archive", "ours vs clang-19 per kernel, timed in one loop", "btf/core:BenchmarkVersusTools:x-faster-than-clang", "", "metric>=", 50, ""},
	{"BTF archive", "minimized BTF size vs the full kernel BTF (execsnoop)",
		"btf/core:BenchmarkRelocate/execsnoop:minbtf-bytes", "btf/core:BenchmarkRelocate/execsnoop:full-btf-bytes", "ratio<=pct", 1, ""},
	{"BTF archive", "minimized BTF size vs bpftool's min_core_btf output (execsnoop)",
		"btf/core:BenchmarkRelocate/execsnoop:minbtf-bytes", "btf/core:BenchmarkRelocate/execsnoop:bpftool-minbtf-bytes", "ratio<=", 1.10, ""},
	{"BTF archive", "fan-out of one build over 100 kernel ids (host BTF): wall time, parse included", "btf/core:BenchmarkFanout100/host", "", "abs<=ms", 5000, ""},
	{"BTF archive", "fan-out over 100 kernel ids (host BTF): peak RSS (MB)", "btf/core:BenchmarkFanout100/host:peak-rss-MB", "", "abs<=", 1024, ""},
	{"BTF archive", "fan-out over 100 kernel ids (Debian 6.12 with modules): wall time", "btf/core:BenchmarkFanout100/debian-6.12-with-modules", "", "abs<=ms", 5000, ""},
	{"BTF archive", "fan-out over 100 kernel ids (Debian 6.12 with modules): peak RSS (MB)", "btf/core:BenchmarkFanout100/debian-6.12-with-modules:peak-rss-MB", "", "abs<=", 1024, ""},
	{"BTF archive", "parse Debian 6.12's vmlinux BTF (btf.LoadSpecFromReader)", "btf/source:BenchmarkParseBTF", "", "info", 0, ""},
	{"BTF archive", "import a Debian linux-image .deb (pure Go: ar, xz/zstd, lz4, ELF .BTF, modules)", "btf/source:BenchmarkImportDeb", "", "info", 0, ""},
	{"Agent", "agent start to attached, artifact built on the server (execsnoop: tracepoint)", "cmd/bpfarm-agent:BenchmarkAgentLoad/execsnoop", "", "abs<=ms", 150, ""},
	{"Agent", "agent start to attached vs clang-19 compile + libbpf load on the host (execsnoop)",
		"cmd/bpfarm-agent:BenchmarkAgentLoad/execsnoop", "cmd/bpfarm-agent:BenchmarkHostCompileLoad/execsnoop", "speedup>=", 10, ""},
	{"Agent", "peak RSS: agent vs clang-19 compile + libbpf load on the host (execsnoop)",
		"cmd/bpfarm-agent:BenchmarkAgentLoad/execsnoop:peak-rss-MB", "cmd/bpfarm-agent:BenchmarkHostCompileLoad/execsnoop:peak-rss-MB", "lower>=", 5, ""},
	{"Agent", "agent start to attached (schedcount: tp_btf + tracepoint)", "cmd/bpfarm-agent:BenchmarkAgentLoad/schedcount", "", "abs<=ms", 150, ""},
	{"Agent", "agent start to attached vs clang-19 compile + libbpf load on the host (schedcount)",
		"cmd/bpfarm-agent:BenchmarkAgentLoad/schedcount", "cmd/bpfarm-agent:BenchmarkHostCompileLoad/schedcount", "speedup>=", 10,
		"its tp_btf program makes cilium/ebpf parse the kernel's whole BTF (~15 ms) to find the attach target"},
	{"Agent", "peak RSS: agent vs clang-19 compile + libbpf load on the host (schedcount)",
		"cmd/bpfarm-agent:BenchmarkAgentLoad/schedcount:peak-rss-MB", "cmd/bpfarm-agent:BenchmarkHostCompileLoad/schedcount:peak-rss-MB", "lower>=", 5, ""},
	{"Agent", "the one artifact check (signature, program/revision/kernel/arch binding, no downgrade) vs the signature check alone it replaced",
		"client:BenchmarkCheckArtifact", "client:BenchmarkManifestVerify", "ratio<=", 1.10, ""},
	{"Agent", "agent binary (static, CGO_ENABLED=0, -s -w), MB", "cmd/bpfarm-agent:BenchmarkAgentBinary:binary-MB", "", "abs<=", 20, ""},
	{"Agent", "daemon RSS, steady state with one program loaded, MB", "cmd/bpfarm-agent:BenchmarkAgentDaemonRSS:rss-MB", "", "abs<=", 40, ""},
	{"Metrics export", "agent daemon RSS while exporting 10 maps × 10k entries (8 of flows with 2 counters, 2 of 16-slot log2 histograms: 520k series lines, ~46 MB a scrape), after scraping it each iteration, MB",
		"cmd/bpfarm-agent:BenchmarkAgentExportRSS:rss-MB", "", "abs<=", 60, ""},
	{"Metrics export", "the same daemon's peak RSS (VmHWM) over its life: load, converge, scrapes, MB",
		"cmd/bpfarm-agent:BenchmarkAgentExportRSS:peak-rss-MB", "", "abs<=", 60, ""},
	{"Metrics export", "one scrape of the daemon's /metrics over HTTP (the 10 maps read with batch lookups, decoded, streamed)",
		"cmd/bpfarm-agent:BenchmarkAgentExportRSS", "", "info", 0, ""},
	{"Metrics export", "one scrape in process: streamed text (what the agent serves) vs the exporter as a prometheus.Collector gathered by a registry and encoded (what promhttp does)",
		"client/export:BenchmarkExportScrape/stream", "client/export:BenchmarkExportScrape/gather", "speedup>=", 5, ""},
	{"Metrics export", "memory allocated by one scrape: streamed vs gathered (Gather materializes every series before encoding)",
		"client/export:BenchmarkExportScrape/stream:B/op", "client/export:BenchmarkExportScrape/gather:B/op", "lower>=", 20,
		"Gather holds every series in memory before it encodes them"},
	{"Web UI", "render programs (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/programs", "", "abs<=ms", 50, ""},
	{"Web UI", "render programs search (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/programs_search", "", "abs<=ms", 50, ""},
	{"Web UI", "render program matrix (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/program_matrix", "", "abs<=ms", 50, ""},
	{"Web UI", "render program problems (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/program_problems", "", "abs<=ms", 50, ""},
	{"Web UI", "render diff (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/diff", "", "abs<=ms", 50, ""},
	{"Web UI", "render build (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/build", "", "abs<=ms", 50, ""},
	{"Web UI", "render artifact (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/artifact", "", "abs<=ms", 50, ""},
	{"Web UI", "render kernels (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/kernels", "", "abs<=ms", 50, ""},
	{"Web UI", "render kernel (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/kernel", "", "abs<=ms", 50, ""},
	{"Web UI", "render hosts (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/hosts", "", "abs<=ms", 50, ""},
	{"Web UI", "render upload (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/upload", "", "abs<=ms", 50, ""},
	{"Web UI", "render signin (1000 kernels × 50 programs, ~90,000 artifacts, 200 hosts)", "web:BenchmarkRenderPages/signin", "", "abs<=ms", 50, ""},
	{"Events and maps", "ring buffer records decoded to JSON lines (observe.Events + AppendJSON) vs read raw (ringbuf.Reader.ReadInto), CPU time per record, same loop, one thread",
		"client/observe:BenchmarkEvents:json-ns/event", "client/observe:BenchmarkEvents:raw-ns/event", "ratio<=", 2, "a 40-byte struct of 6 fields (u32, u32, u64, char[16], s32, u32)"},
	{"Events and maps", "the same ratio paired within each run (the median of the runs' own decoded/raw ratios: load that changes between runs does not skew it)",
		"client/observe:BenchmarkEvents:json/raw", "", "budget<=", 2, ""},
	{"Events and maps", "records decoded to JSON per second on one core", "client/observe:BenchmarkEvents:json-events/s", "", "abs>=", 200000, ""},
	{"Verification", "kernel × program verifications per minute under qemu (TCG), 1 VM at a time", "verify:BenchmarkVerify/vms=1:verifications/min", "", "info", 0, ""},
	{"Verification", "the same with 2 parallel VMs on 2 cores", "verify:BenchmarkVerify/vms=2:verifications/min", "", "info", 0, ""},
	{"Fleet scale", "distinct real Debian kernels in the archive (6.1 and 6.12; generic, cloud, rt; x86_64 and arm64)",
		"cmd/bpfarm:BenchmarkFleet:kernels", "", "abs>=", 30, ""},
	{"Fleet scale", "import throughput: kernels per second (2 uploads at a time into the real server: .deb parse, BTF, modules, config, image)",
		"cmd/bpfarm:BenchmarkFleet:import-kernels/s", "", "info", 0, ""},
	{"Fleet scale", "packages the importer refused (named in the raw log)", "cmd/bpfarm:BenchmarkFleet:import-refused", "", "info", 0, ""},
	{"Fleet scale", "import throughput: MB of packages per second", "cmd/bpfarm:BenchmarkFleet:import-MB/s", "", "info", 0, ""},
	{"Fleet scale", "import: server CPU time per kernel (independent of the machine's other load)",
		"cmd/bpfarm:BenchmarkFleet:import-cpu-ns/kernel", "", "info", 0, ""},
	{"Fleet scale", "server peak RSS during the import", "cmd/bpfarm:BenchmarkFleet:import-peak-rss-MB", "", "budget<=", 1536, ""},
	{"Fleet scale", "disk per kernel: BTF, module BTF, config and boot image, blobs shared by digest",
		"cmd/bpfarm:BenchmarkFleet:kernel-disk-MB/kernel", "", "info", 0, ""},
	{"Fleet scale", "disk per kernel and build: minimized BTF, pre-relocated object and signed manifest (the CO-RE object is stored once per build)",
		"cmd/bpfarm:BenchmarkFleet:artifact-disk-KB/kernel", "", "info", 0, ""},
	{"Fleet scale", "CO-RE objects stored for one push (one build per arch) fanned out over every kernel",
		"cmd/bpfarm:BenchmarkFleet:object-blobs", "", "info", 0, ""},
	{"Fleet scale", "fan-out of one push over every kernel, from a fresh server (every BTF parse included): first build done to last artifact",
		"cmd/bpfarm:BenchmarkFleet:fanout-ms", "", "info", 0, ""},
	{"Fleet scale", "fan-out: server CPU time of the push's builds (paid once, whatever the number of kernels; clang runs in child processes)",
		"cmd/bpfarm:BenchmarkFleet:fanout-cpu-builds-ns", "", "info", 0, ""},
	{"Fleet scale", "fan-out: server CPU time per additional kernel (BTF read and parsed, module BTF only when vmlinux lacks a type (as libbpf), relocation, minimized BTF, signed manifest, storage)",
		"cmd/bpfarm:BenchmarkFleet:fanout-cpu-ns/kernel", "", "info", 0, ""},
	{"Fleet scale", "fan-out CPU time per kernel vs compiling per kernel with clang-19 (single-threaded: its wall time is its CPU time)",
		"cmd/bpfarm:BenchmarkFleet:fanout-cpu-ns/kernel", "btf/core:BenchmarkClangPerKernel", "speedup>=", 1, ""},
	{"Fleet scale", "fan-out extrapolated to 1000 distinct kernels on 2 cores: measured wall time per kernel × 1000 (on this shared machine)",
		"cmd/bpfarm:BenchmarkFleet:fanout-1000-s", "", "budget<=", 60, ""},
	{"Fleet scale", "fan-out extrapolated to 1000 distinct kernels on 2 idle cores: (builds + 1000 × CPU time per kernel) / 2 relocators",
		"cmd/bpfarm:BenchmarkFleet:fanout-1000-cpu-s", "", "budget<=", 60, ""},
	{"Fleet scale", "server peak RSS during the fan-out (parsed kernels cached: 8 at most, so it does not grow with the kernels)",
		"cmd/bpfarm:BenchmarkFleet:fanout-peak-rss-MB", "", "budget<=", 1536, ""},
	{"Replicas", "wake-up across replicas on PostgreSQL: NOTIFY from one connection until a waiter woken by another process's LISTEN connection (budget: the issue's 2 s from an assignment change to every poller)",
		"server/store:BenchmarkNotify/postgres", "", "abs<=ms", 2000, ""},
	{"Replicas", "wake-up across replicas vs in-process (SQLite, one process): the price of crossing processes",
		"server/store:BenchmarkNotify/postgres", "server/store:BenchmarkNotify/sqlite", "info", 0, ""},
	{"Metadata database", "one job cycle (push a revision, queue, claim and finish its build, queue, claim and finish a relocation) on PostgreSQL over loopback vs SQLite",
		"server/store:BenchmarkStore/cycle/postgres", "server/store:BenchmarkStore/cycle/sqlite", "info", 0,
		"eight transactions and a few reads: network round trips against SQLite's in-process calls and fsyncs"},
	{"Metadata database", "a host's desired state (5 assignments, what agents long-poll) on PostgreSQL vs SQLite",
		"server/store:BenchmarkStore/desired/postgres", "server/store:BenchmarkStore/desired/sqlite", "info", 0, ""},
	{"Metadata database", "one job cycle on PostgreSQL", "server/store:BenchmarkStore/cycle/postgres", "", "abs<=ms", 50,
		"a farm's database work per build stays far below a compile (~1 s)"},
	{"Farm scale", "builds per minute, 1 worker process (one build at a time), 16 real compiles queued at once",
		"internal/farmtest:BenchmarkFarmBuilds/workers=1:builds/min", "", "info", 0, farmNote},
	{"Farm scale", "builds per minute, 2 worker processes (one build at a time each) vs 1",
		"internal/farmtest:BenchmarkFarmBuilds/workers=2:builds/min", "internal/farmtest:BenchmarkFarmBuilds/workers=1:builds/min", "gain", 0, farmNote},
	{"Farm scale", "machine load average (1 min) at the end of the 2-worker builds run: the throughput rows are only comparable on an equally loaded machine",
		"internal/farmtest:BenchmarkFarmBuilds/workers=2:load-average", "", "info", 0, ""},
	{"Farm scale", "artifact resolves per second through 1 API replica (32 concurrent clients)",
		"internal/farmtest:BenchmarkFarmResolve:resolves/s-1-replica", "", "info", 0, farmNote},
	{"Farm scale", "artifact resolves per second through 2 API replicas vs 1 (same clients, same run)",
		"internal/farmtest:BenchmarkFarmResolve:resolves/s-2-replicas", "internal/farmtest:BenchmarkFarmResolve:resolves/s-1-replica", "gain", 0, farmNote},
	{"Farm scale", "machine load average (1 min) at the end of the resolves run",
		"internal/farmtest:BenchmarkFarmResolve:load-average", "", "info", 0, ""},
	{"Farm scale", "5,000 simulated agents long-polling across 2 API replicas: RSS of both replicas, every poll held",
		"internal/farmtest:BenchmarkFarmLongPoll:held-rss-MB", "", "info", 0, farmNote},
	{"Farm scale", "5,000 long polls held: goroutines of both replicas",
		"internal/farmtest:BenchmarkFarmLongPoll:held-goroutines", "", "info", 0, ""},
	{"Farm scale", "RSS per held long poll ((held − idle RSS) / 5,000)",
		"internal/farmtest:BenchmarkFarmLongPoll:rss-KB/poll", "", "budget<=", 50, ""},
	{"Farm scale", "time from an assignment change (through one replica) until all 5,000 pollers on both replicas have it",
		"internal/farmtest:BenchmarkFarmLongPoll:all-see-change-ms", "", "budget<=", 2000, farmNote},
	{"Farm scale", "the same, median poller",
		"internal/farmtest:BenchmarkFarmLongPoll:median-see-change-ms", "", "info", 0, ""},
}

// farmNote goes with the farm-scale figures: where they were measured.
const farmNote = "a real PostgreSQL and MinIO; every process, the database, the object store and the load generator share this machine's cores (2 here)"

var lineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func main() {
	out := flag.String("o", "BENCHMARKS.md", "output file")
	only := flag.String("only", "", "run only the groups whose package or pattern contains one of these (comma-separated); "+
		"the other rows and raw lines are kept from the existing output file")
	from := flag.String("from", "", "read `go test -bench` output (with its pkg: lines) from these files (comma-separated; a later file's figures win) instead of running the groups; "+
		"the other rows and raw lines are kept from the existing output file")
	flag.Parse()

	results := map[string]result{} // "pkg:Name" → metrics
	var logs bytes.Buffer
	if *from != "" {
		// A later file's figures replace an earlier one's (a re-measured
		// part of a benchmark).
		for _, f := range strings.Split(*from, ",") {
			b, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchreport:", err)
				os.Exit(1)
			}
			for pkg, out := range splitByPackage(b) {
				for name, r := range parse(out) {
					key := pkg + ":" + name
					if results[key] == nil {
						results[key] = result{}
					}
					maps.Copy(results[key], r)
				}
				logs.Write(out)
			}
		}
		groups = nil
	}
	for _, g := range groups {
		if *only != "" && !slices.ContainsFunc(strings.Split(*only, ","), func(o string) bool { return strings.Contains(g.pkg+" "+g.pattern, o) }) {
			continue
		}
		if _, err := os.Stat(g.pkg); err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: skipping %s: %v\n", g.pkg, err)
			continue
		}
		args := []string{"test", "-run", "^$", "-bench", g.pattern, "-benchmem", "-timeout", "60m"}
		if g.benchtime != "" {
			args = append(args, "-benchtime", g.benchtime)
		}
		if g.count > 1 {
			args = append(args, "-count", strconv.Itoa(g.count))
		}
		args = append(args, g.pkg)
		fmt.Fprintf(os.Stderr, "benchreport: go %s\n", strings.Join(args, " "))
		cmd := exec.Command("go", args...)
		cmd.Stderr = os.Stderr
		cmd.Env = append(os.Environ(), "BPFARM_TEST_STRICT=1")
		b, err := cmd.Output()
		logs.Write(b)
		os.Stderr.Write(b)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: %s: %v\n", g.pkg, err)
			os.Exit(1)
		}
		pkg := strings.Trim(g.pkg, "./")
		for name, r := range parse(b) {
			results[pkg+":"+name] = r
		}
	}
	var old *previous
	if *only != "" || *from != "" {
		old = readPrevious(*out)
	}
	report := render(results, logs.String(), old)
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "benchreport: wrote %s\n", *out)
}

// splitByPackage splits `go test -bench` output at its "pkg: " lines, by
// package path within the module.
func splitByPackage(b []byte) map[string][]byte {
	out := map[string][]byte{}
	pkg := ""
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if p, ok := bytes.CutPrefix(line, []byte("pkg: ")); ok {
			pkg = strings.TrimPrefix(strings.TrimSpace(string(p)), "github.com/bpfarm/bpfarm/")
			continue
		}
		if pkg != "" {
			out[pkg] = append(out[pkg], line...)
		}
	}
	return out
}

// parse reads `go test -bench` output into medians per benchmark.
func parse(out []byte) map[string]result {
	samples := map[string]map[string][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name := m[1]
		f := strings.Fields(m[2])
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
		}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			samples[name][f[i+1]] = append(samples[name][f[i+1]], v)
		}
	}
	res := map[string]result{}
	for name, metrics := range samples {
		r := result{}
		for unit, vs := range metrics {
			sort.Float64s(vs)
			r[unit] = vs[len(vs)/2]
		}
		res[name] = r
	}
	return res
}

// value looks up "pkg:Name" (ns/op) or "pkg:Name:metric".
func value(results map[string]result, ref string) (float64, bool) {
	parts := strings.SplitN(ref, ":", 3)
	r, ok := results[parts[0]+":"+parts[1]]
	if !ok {
		return 0, false
	}
	unit := "ns/op"
	if len(parts) == 3 {
		unit = parts[2]
	}
	v, ok := r[unit]
	return v, ok
}

func ms(ns float64) string {
	if ns > 0 && ns < 1e4 { // under 0.01 ms: "0.00 ms" would say nothing
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
	return fmt.Sprintf("%.2f ms", ns/1e6)
}

// previous is what an earlier report holds: its table rows by "what"
// cell, its raw benchmark lines by benchmark name, and the hand-written
// notes of each section, before its table (pre) and after it (post).
type previous struct {
	rows      map[string]string
	raw       map[string][]string
	pre, post map[string]string
}

// readPrevious reads an earlier report at path (nil when there is none).
func readPrevious(path string) *previous {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	p := &previous{rows: map[string]string{}, raw: map[string][]string{}, pre: map[string]string{}, post: map[string]string{}}
	inRaw, section, tableSeen := false, "", false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "## Raw output"):
			inRaw = true
		case inRaw && strings.HasPrefix(line, "Benchmark"):
			name, _, _ := strings.Cut(line, " ")
			name, _, _ = strings.Cut(name, "\t")
			p.raw[name] = append(p.raw[name], line)
		case inRaw:
		case strings.HasPrefix(line, "## "):
			section, tableSeen = strings.TrimPrefix(line, "## "), false
		case strings.HasPrefix(line, "|"):
			tableSeen = true
			if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| what |") {
				what, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " | ")
				p.rows[what] = line
			}
		case section != "" && !tableSeen:
			p.pre[section] += line + "\n"
		case section != "":
			p.post[section] += line + "\n"
		}
	}
	for _, m := range []map[string]string{p.pre, p.post} {
		for k, v := range m {
			if v = strings.TrimSpace(v); v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
	}
	return p
}

// notes returns section's hand-written notes from the previous report,
// unless the section was measured again in this run: notes describe the
// figures they were written for, so those of a re-measured section are
// dropped, with a warning, for their author to write again.
func (p *previous) notes(section string, measured bool) (pre, post string) {
	if p == nil {
		return "", ""
	}
	pre, post = p.pre[section], p.post[section]
	if measured && (pre != "" || post != "") {
		fmt.Fprintf(os.Stderr, "benchreport: section %q was measured again: its hand-written notes are dropped (they describe the previous figures); write them again\n", section)
		return "", ""
	}
	return pre, post
}

func render(results map[string]result, raw string, old *previous) string {
	var b strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	clang, _ := exec.Command("clang-19", "--version").Output()
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (`go run ./internal/benchreport`) on %s: %s, %d cores, kernel %s, %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)),
		strings.TrimSpace(strings.SplitN(string(clang), "\n", 2)[0]))
	b.WriteString("Every comparison is measured in the same run as its alternative; figures are medians of the runs.\n")
	if old != nil {
		b.WriteString("Only some groups were measured in this run (`-only` or `-from`); the other rows are kept from the previous report.\n")
	}
	measured := map[string]bool{}
	for _, c := range comparisons {
		if _, ok := value(results, c.ours); ok {
			measured[c.section] = true
		}
	}
	section, post := "", ""
	endSection := func() {
		if post != "" {
			b.WriteString("\n" + post + "\n")
		}
	}
	header := func(c comparison) {
		if c.section != section {
			endSection()
			section = c.section
			var pre string
			pre, post = old.notes(section, measured[section])
			fmt.Fprintf(&b, "\n## %s\n\n", section)
			if pre != "" {
				b.WriteString(pre + "\n\n")
			}
			b.WriteString("| what | ours | alternative | ratio | budget | verdict |\n|---|---|---|---|---|---|\n")
		}
	}
	for _, c := range comparisons {
		what := c.what
		if c.note != "" {
			what += " — " + c.note
		}
		ours, ok := value(results, c.ours)
		theirs, hasTheirs := 0.0, false
		if ok && c.theirs != "" {
			theirs, hasTheirs = value(results, c.theirs)
			ok = hasTheirs
		}
		if !ok {
			if row, kept := old.row(what); kept {
				header(c)
				b.WriteString(row + "\n")
			}
			continue
		}
		header(c)
		fmtv := func(v float64, ref string) string {
			switch {
			case strings.HasSuffix(ref, ":kernels"), strings.HasSuffix(ref, "-blobs"), strings.HasSuffix(ref, "-refused"):
				return fmt.Sprintf("%.0f", v)
			case strings.HasSuffix(ref, "kernels/s"):
				return fmt.Sprintf("%.2f kernels/s", v)
			case strings.HasSuffix(ref, "MB/s"):
				return fmt.Sprintf("%.1f MB/s", v)
			case strings.HasSuffix(ref, "MB/kernel"):
				return fmt.Sprintf("%.1f MB", v)
			case strings.HasSuffix(ref, "KB/kernel"):
				return fmt.Sprintf("%.1f KB", v)
			case strings.HasSuffix(ref, "-ns"):
				return ms(v)
			case strings.HasSuffix(ref, "-s"):
				return fmt.Sprintf("%.1f s", v)
			case strings.HasSuffix(ref, "-ms"):
				return fmt.Sprintf("%.0f ms", v)
			case strings.HasSuffix(ref, "bytes"):
				return fmt.Sprintf("%.0f bytes", v)
			case strings.HasSuffix(ref, "B/op"):
				return fmt.Sprintf("%.1f MB", v/(1<<20))
			case strings.Contains(ref, "resolves/s"):
				return fmt.Sprintf("%.0f resolves/s", v)
			case strings.HasSuffix(ref, "KB/poll"):
				return fmt.Sprintf("%.1f KB", v)
			case strings.HasSuffix(ref, "load-average"):
				return fmt.Sprintf("%.1f", v)
			case strings.HasSuffix(ref, "goroutines"):
				return fmt.Sprintf("%.0f", v)
			case strings.HasSuffix(ref, "/min"):
				return fmt.Sprintf("%.1f per minute", v)
			case strings.HasSuffix(ref, "ns/event"):
				return fmt.Sprintf("%.0f ns/record", v)
			case strings.HasSuffix(ref, ":json/raw"):
				return fmt.Sprintf("%.3f×", v)
			case strings.HasSuffix(ref, "events/s"):
				return fmt.Sprintf("%.0f records/s", v)
			case strings.Contains(ref, "MiB"), strings.HasSuffix(ref, "MB"):
				return fmt.Sprintf("%.0f MB", v)
			}
			return ms(v)
		}
		oursS, theirsS, ratioS, budgetS, verdict := fmtv(ours, c.ours), "-", "-", "-", "-"
		if hasTheirs {
			theirsS = fmtv(theirs, c.theirs)
		}
		within := true
		switch c.kind {
		case "ratio<=":
			r := ours / theirs
			ratioS, budgetS = fmt.Sprintf("%.3f×", r), fmt.Sprintf("≤ %.2f×", c.budget)
			within = r <= c.budget
		case "ratio<=pct":
			r := 100 * ours / theirs
			ratioS, budgetS = fmt.Sprintf("%.3f%%", r), fmt.Sprintf("≤ %.0f%%", c.budget)
			within = r <= c.budget
		case "speedup>=":
			r := theirs / ours
			ratioS, budgetS = fmt.Sprintf("%.1f× faster", r), fmt.Sprintf("≥ %.0f× faster", c.budget)
			within = r >= c.budget
		case "gain":
			ratioS = fmt.Sprintf("%.2f×", ours/theirs)
		case "lower>=":
			r := theirs / ours
			ratioS, budgetS = fmt.Sprintf("%.1f× lower", r), fmt.Sprintf("≥ %.0f× lower", c.budget)
			within = r >= c.budget
		case "abs<=ms":
			budgetS = fmt.Sprintf("≤ %.0f ms", c.budget)
			within = ours/1e6 <= c.budget
		case "abs<=":
			budgetS = fmt.Sprintf("≤ %.0f", c.budget)
			within = ours <= c.budget
		case "budget<=":
			r := ours / c.budget
			ratioS, budgetS = fmt.Sprintf("%.2f× the budget", r), "≤ "+fmtv(c.budget, c.ours)
			within = r <= 1
		case "abs>=":
			budgetS = fmt.Sprintf("≥ %.0f", c.budget)
			within = ours >= c.budget
		case "metric>=":
			oursS, ratioS = "-", fmt.Sprintf("%.1f× faster", ours)
			budgetS = fmt.Sprintf("≥ %.0f× faster", c.budget)
			within = ours >= c.budget
		}
		if c.kind != "info" && c.kind != "gain" {
			verdict = "within budget"
			if !within {
				verdict = "**over budget**"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", what, oursS, theirsS, ratioS, budgetS, verdict)
	}
	endSection()
	b.WriteString("\n## Raw output\n\n```\n")
	ran := map[string]bool{}
	for _, line := range strings.Split(raw, "\n") {
		if strings.HasPrefix(line, "Benchmark") {
			b.WriteString(line + "\n")
			name, _, _ := strings.Cut(strings.Fields(line)[0], "-")
			ran[strings.Fields(line)[0]], ran[name] = true, true
		}
	}
	if old != nil {
		for _, name := range slices.Sorted(maps.Keys(old.raw)) {
			base, _, _ := strings.Cut(name, "-")
			if !ran[name] && !ran[base] {
				for _, line := range old.raw[name] {
					b.WriteString(line + "\n")
				}
			}
		}
	}
	b.WriteString("```\n")
	return b.String()
}

// row returns the earlier report's row for what.
func (p *previous) row(what string) (string, bool) {
	if p == nil {
		return "", false
	}
	r, ok := p.rows[what]
	return r, ok
}
