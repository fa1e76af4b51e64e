package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

// SeedOptions sizes a seeded database.
type SeedOptions struct {
	Kernels  int // default 1000
	Programs int // default 50
	Hosts    int // default 200
}

// Seeded names rows of a seeded database the pages can be asked about.
type Seeded struct {
	Program    string // has two revisions with real bundles (for diffs)
	RevFrom    string
	RevTo      string
	BuildID    int64 // a succeeded build with a log
	ArtifactID int64 // a done artifact with a signed manifest and files
	Kernel     string
	Kernels    int
	Artifacts  int
}

func fakeDigest(parts ...any) string {
	h := sha256.Sum256([]byte(fmt.Sprint(parts...)))
	return hex.EncodeToString(h[:])
}

var seedNames = []string{"execsnoop", "opensnoop", "biolatency", "tcpconnect", "tcplife", "runqlat", "oomkill",
	"capable", "bindsnoop", "filelife", "mountsnoop", "sigsnoop", "syscount", "vfsstat", "cachestat", "exitsnoop",
	"drsnoop", "hardirqs", "softirqs", "llcstat", "offcputime", "profile", "tcprtt", "tcpstates", "biosnoop",
	"biopattern", "bitesize", "cpudist", "fsdist", "fsslower", "funclatency", "gethostlatency", "klockstat",
	"ksnoop", "numamove", "readahead", "solisten", "statsnoop", "tcpsynbl", "wakeuptime", "xdpcount", "tcdrop",
	"lsm-guard", "netpolicy", "dnswatch", "pidtrack", "memleak", "slabtop", "cgroupio", "schedcount"}

var seedDistros = []struct {
	distro, version, base string
	series                []string
}{
	{"ubuntu", "18.04", "-generic", []string{"4.15.0", "5.4.0"}},
	{"ubuntu", "20.04", "-generic", []string{"5.4.0", "5.8.0", "5.11.0", "5.13.0", "5.15.0"}},
	{"ubuntu", "22.04", "-generic", []string{"5.15.0", "5.19.0", "6.2.0", "6.5.0", "6.8.0"}},
	{"ubuntu", "24.04", "-generic", []string{"6.8.0", "6.11.0"}},
	{"debian", "10", "-cloud-amd64", []string{"4.19.0"}},
	{"debian", "11", "-cloud-amd64", []string{"5.10.0"}},
	{"debian", "12", "-cloud-amd64", []string{"6.1.0"}},
	{"centos", "7", ".el7.x86_64", []string{"3.10.0"}},
	{"centos", "8", ".el8.x86_64", []string{"4.18.0"}},
	{"rhel", "9", ".el9_3.x86_64", []string{"5.14.0"}},
	{"amzn", "2", ".amzn2.x86_64", []string{"4.14.336", "5.10.210"}},
	{"amzn", "2023", ".amzn2023.x86_64", []string{"6.1.72"}},
	{"fedora", "39", ".fc39.x86_64", []string{"6.5.6", "6.8.9"}},
	{"ol", "8", ".el8uek.x86_64", []string{"5.4.17"}},
}

// seedInspection returns a realistic inspection of program i.
func seedInspection(i int) *inspect.Object {
	n := 1 + i%3
	o := &inspect.Object{License: "Dual BSD/GPL", BTF: true, Maps: []inspect.Map{
		{Name: "events", Type: "RingBuf", MaxEntries: 256 * 1024, ExportNote: "a stream of records, not a table",
			Record: &inspect.Record{Type: "struct event", Size: 156, Origin: "declared", Note: "BPFARM_RECORD(events, struct event)"}},
		{Name: "counts", Type: "Hash", KeySize: 4, ValueSize: 8, MaxEntries: 10240},
	}, Globals: []inspect.Global{
		{Name: "target_tgid", Section: ".rodata", Size: 4, Type: "u32", Const: true},
		{Name: "min_duration_ns", Section: ".rodata", Offset: 8, Size: 8, Type: "u64", Const: true},
	}}
	hooks := []string{"sys_enter_execve", "sys_exit_execve", "sched_process_exit"}
	for j := 0; j < n; j++ {
		p := inspect.Program{Name: fmt.Sprintf("handle_%s", hooks[j]), Section: "tp/syscalls/" + hooks[j],
			Type: "TracePoint", AttachTo: "syscalls/" + hooks[j], Instructions: 120 + 37*j, CORERelocations: 4 + j,
			Helpers: []string{"bpf_get_current_pid_tgid", "bpf_get_current_task", "bpf_probe_read_kernel", "bpf_ringbuf_reserve", "bpf_ringbuf_submit"},
			Kfuncs:  []string{}}
		o.Programs = append(o.Programs, p)
		o.CORERelocations += p.CORERelocations
	}
	return o
}

// seedReport returns a realistic relocation report of inspection o for a
// kernel, with the outcome drawn from rng.
func seedReport(o *inspect.Object, kid string, rng *rand.Rand) (manifest.Report, string) {
	r := manifest.Report{Kernel: kid}
	status := "ok"
	for _, p := range o.Programs {
		pr := manifest.ProgramReport{Name: p.Name, Section: p.Section, Status: "ok", Relocations: p.CORERelocations,
			Targets: []manifest.Target{{Kind: "tracepoint", Name: p.AttachTo, Status: "present"}}}
		switch x := rng.IntN(100); {
		case x < 8:
			pr.Status = "poisoned"
			pr.Poisoned = []manifest.Poison{{Kind: "field", Path: "task_struct.loginuid", Instruction: 42, Guarded: false},
				{Kind: "field", Path: "task_struct.sessionid", Instruction: 57, Guarded: true}}
		case x < 11:
			pr.Status = "failed"
			pr.Error = "relocate: kfunc bpf_task_acquire: not found in kernel BTF"
			pr.Targets[0].Status = "missing"
		case x < 16:
			pr.Poisoned = []manifest.Poison{{Kind: "field", Path: "task_struct.sessionid", Instruction: 57, Guarded: true}}
		case x >= 97:
			pr.Status = "unsupported"
			pr.Reason = "map events: ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel"
			pr.Needs = []manifest.Need{{Kind: "map_type", Name: "BPF_MAP_TYPE_RINGBUF", Map: "events", Status: "missing"}}
		}
		switch {
		case pr.Status == "failed":
			status = "failed"
		case pr.Status == "unsupported" && status != "failed":
			status = "unsupported"
		case pr.Status == "poisoned" && status == "ok":
			status = "poisoned"
		}
		r.Programs = append(r.Programs, pr)
	}
	return r, status
}

// Seed fills db with opt.Kernels kernels, opt.Programs programs (two
// revisions each, the latest built for x86_64 and arm64, both relocated
// for every kernel of their arch), opt.Hosts hosts and a few assignments,
// directly with SQL in one transaction. The first program's bundles, the
// build logs and one artifact's files are real blobs.
func Seed(tb testing.TB, db *store.DB, blobs blob.Store, key *signing.Key, opt SeedOptions) Seeded {
	tb.Helper()
	if opt.Kernels == 0 {
		opt.Kernels = 1000
	}
	if opt.Programs == 0 {
		opt.Programs = 50
	}
	if opt.Hosts == 0 {
		opt.Hosts = 200
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var out Seeded
	now := time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Millisecond)

	// Real blobs: two revisions of the first program, a build log.
	bundle := func(src string) (string, string) {
		b, err := bpfsrc.New("", []bpfsrc.File{{Name: seedNames[0] + ".bpf.c", Data: []byte(src)},
			{Name: "common.h", Data: []byte("#pragma once\n#define TASK_COMM_LEN 16\n")}}, bpfsrc.DefaultLimits)
		if err != nil {
			tb.Fatal(err)
		}
		var buf bytes.Buffer
		if err := b.WriteTarGz(&buf); err != nil {
			tb.Fatal(err)
		}
		d, err := blob.PutBytes(ctx, blobs, buf.Bytes())
		if err != nil {
			tb.Fatal(err)
		}
		return b.Digest(), d.String()
	}
	srcA := "// SPDX-License-Identifier: GPL-2.0\n#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#include \"common.h\"\n\n" +
		"char LICENSE[] SEC(\"license\") = \"GPL\";\n\nSEC(\"tp/syscalls/sys_enter_execve\")\nint handle(void *ctx)\n{\n" +
		"\tbpf_printk(\"exec\");\n\treturn 0;\n}\n"
	srcB := "// SPDX-License-Identifier: GPL-2.0\n#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#include \"common.h\"\n\n" +
		"char LICENSE[] SEC(\"license\") = \"GPL\";\n\nconst volatile int target_pid = 0;\n\nSEC(\"tp/syscalls/sys_enter_execve\")\nint handle(void *ctx)\n{\n" +
		"\tif (target_pid && (bpf_get_current_pid_tgid() >> 32) != target_pid)\n\t\treturn 0;\n\tbpf_printk(\"exec\");\n\treturn 0;\n}\n"
	revA, blobA := bundle(srcA)
	revB, blobB := bundle(srcB)
	logD, err := blob.PutBytes(ctx, blobs, []byte("build: compiler: clang version 19.1.7\ncommand: clang -O2 -g -target bpf\n\n"+
		"execsnoop.bpf.c:42:7: warning: unused variable 'ret' [-Wunused-variable]\n\nOK\n"))
	if err != nil {
		tb.Fatal(err)
	}

	tx, err := db.SQL().BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	must := func(res sql.Result, err error) int64 {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		id, _ := res.LastInsertId()
		return id
	}
	prep := func(q string) *sql.Stmt {
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			tb.Fatal(err)
		}
		return st
	}

	// Kernels.
	insKernel := prep(`INSERT INTO kernels (kid, distro, version, arch, release, build, version_code, btf_blob, btf_size,
		modules_blob, modules_count, modules_size, source, imported_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	type kern struct {
		id        int64
		kid, arch string
	}
	var kernels []kern
	for i := 0; i < opt.Kernels; i++ {
		dv := seedDistros[i%len(seedDistros)]
		arch := "x86_64"
		if i%5 == 4 {
			arch = "arm64"
		}
		series := dv.series[(i/len(seedDistros))%len(dv.series)]
		release := fmt.Sprintf("%s-%d%s", series, 100+i/len(seedDistros), dv.base)
		kid := fmt.Sprintf("%s/%s/%s/%s", dv.distro, dv.version, arch, release)
		id := must(insKernel.ExecContext(ctx, kid, dv.distro, dv.version, arch, release, "#1 SMP PREEMPT_DYNAMIC", 0,
			fakeDigest("btf", kid), 4<<20+rng.Int64N(4<<20), fakeDigest("mods", kid), 40+rng.IntN(3000), 20<<20,
			"btfhub archive btfhub-archive/"+kid+".btf.tar.xz", "admin", now))
		kernels = append(kernels, kern{id, kid, arch})
	}
	out.Kernels = len(kernels)
	out.Kernel = kernels[0].kid

	// Programs, revisions, builds, artifacts.
	insProg := prep(`INSERT INTO programs (name, created_at, updated_at) VALUES (?, ?, ?)`)
	insRev := prep(`INSERT INTO revisions (program_id, digest, entry, bundle_blob, size, files, pushed_by, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	insBuild := prep(`INSERT INTO builds (revision_id, arch, flags, cache_key, state, diagnostics, inspection, object_blob,
		object_size, log_blob, compiler, used_pch, attempts, created_at, started_at, finished_at)
		VALUES (?, ?, '[]', ?, 'succeeded', ?, ?, ?, ?, ?, 'clang version 19.1.7', 1, 1, ?, ?, ?)`)
	insArt := prep(`INSERT INTO artifacts (build_id, kernel_id, state, status, report, minbtf_blob, minbtf_size,
		relocated_blob, relocated_size, manifest_blob, attempts, created_at, finished_at)
		VALUES (?, ?, 'done', ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`)
	diags, _ := json.Marshal([]bpfsrc.Diagnostic{{File: "prog.bpf.c", Line: 42, Column: 7, Severity: "warning",
		Message: "unused variable 'ret' [-Wunused-variable]"}})
	for i := 0; i < opt.Programs; i++ {
		name := seedNames[i%len(seedNames)]
		if i >= len(seedNames) {
			name = fmt.Sprintf("%s-%d", name, i/len(seedNames))
		}
		pid := must(insProg.ExecContext(ctx, name, now, now.Add(time.Duration(i)*time.Minute)))
		insp := seedInspection(i)
		inspJSON, _ := json.Marshal(insp)
		for v := 0; v < 2; v++ {
			digest, bblob := fakeDigest("rev", name, v), fakeDigest("bundle", name, v)
			if i == 0 {
				digest, bblob = revA, blobA
				if v == 1 {
					digest, bblob = revB, blobB
				}
			}
			at := now.Add(time.Duration(i)*time.Minute + time.Duration(v)*time.Hour)
			rid := must(insRev.ExecContext(ctx, pid, digest, name+".bpf.c", bblob, 2400, 2, "publisher", at))
			if i == 0 {
				out.Program = name
				if v == 0 {
					out.RevFrom = digest
				} else {
					out.RevTo = digest
				}
			}
			arches := []string{"x86_64"}
			if v == 1 {
				arches = append(arches, "arm64")
			}
			for _, arch := range arches {
				bid := must(insBuild.ExecContext(ctx, rid, arch, fakeDigest("key", name, v, arch), string(diags), string(inspJSON),
					fakeDigest("obj", name, v, arch), 9000+rng.IntN(20000), logD.String(), at, at, at.Add(1400*time.Millisecond)))
				if i == 0 && v == 1 && arch == "x86_64" {
					out.BuildID = bid
				}
				for _, k := range kernels {
					if k.arch != arch {
						continue
					}
					rep, status := seedReport(insp, k.kid, rng)
					rj, _ := json.Marshal(rep)
					aid := must(insArt.ExecContext(ctx, bid, k.id, status, string(rj), fakeDigest("min", bid, k.id), 2000+rng.IntN(6000),
						fakeDigest("rel", bid, k.id), 9000+rng.IntN(20000), fakeDigest("man", bid, k.id), at, at.Add(time.Second)))
					out.Artifacts++
					if i == 0 && v == 1 && arch == "x86_64" && out.ArtifactID == 0 {
						out.ArtifactID = aid
					}
				}
			}
		}
	}

	// Hosts and assignments.
	insHost := prep(`INSERT INTO hosts (name, host_id, hostname, kernel, build, labels, has_btf, agent_version, registered_by,
		first_seen, last_seen, reported_at, state) VALUES (?, ?, ?, ?, '', ?, 1, 'v0.4.0', 'agent', ?, ?, ?, ?)`)
	for h := 0; h < opt.Hosts; h++ {
		k := kernels[(h*7)%len(kernels)]
		labels, _ := json.Marshal(map[string]string{"env": []string{"prod", "staging"}[h%2], "role": []string{"web", "db", "batch"}[h%3]})
		var progs []map[string]any
		for j := 0; j < 3; j++ {
			st := "loaded"
			if (h+j)%17 == 0 {
				st = "failed"
			} else if (h+j)%23 == 0 {
				st = "pending"
			}
			hp := map[string]any{"program": seedNames[(h+j)%opt.Programs%len(seedNames)],
				"revision": fakeDigest("rev", seedNames[(h+j)%opt.Programs%len(seedNames)], 1), "state": st, "since": now}
			if j == 0 && st == "loaded" {
				hp["exports"] = []api.ExportStatus{
					{Map: "counts", Kind: api.ExportCounter, Metrics: []string{"bpf_prog_counts_total"}, Labels: []string{"pid", "comm"}},
					{Map: "events", Error: "map events: a RingBuf map holds no values to export"}}
			}
			progs = append(progs, hp)
		}
		state, _ := json.Marshal(progs)
		seen := time.Now().UTC().Add(-time.Duration(h%30) * time.Minute)
		must(insHost.ExecContext(ctx, fmt.Sprintf("host-%03d", h), fakeDigest("hid", h)[:32], fmt.Sprintf("ip-10-0-%d-%d", h/250, h%250),
			k.kid, string(labels), now, seen, seen, string(state)))
	}
	insAssign := prep(`INSERT INTO assignments (program_id, selector, revision, options, exports, created_by, created_at)
		VALUES (?, ?, '', '{}', '[{"map":"counts"},{"map":"lat","kind":"histogram"}]', 'admin', ?)`)
	for a := 0; a < 10 && a < opt.Programs; a++ {
		sel, _ := json.Marshal(map[string]string{"role": []string{"web", "db", "batch"}[a%3]})
		must(insAssign.ExecContext(ctx, a+1, string(sel), now))
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}

	// One artifact with real files and a signed manifest.
	a, err := db.Artifact(ctx, out.ArtifactID)
	if err != nil {
		tb.Fatal(err)
	}
	minb := bytes.Repeat([]byte("minimized-btf "), 300)
	rel := bytes.Repeat([]byte("relocated-object "), 700)
	obj := bytes.Repeat([]byte("core-object "), 900)
	put := func(b []byte) string {
		d, err := blob.PutBytes(ctx, blobs, b)
		if err != nil {
			tb.Fatal(err)
		}
		return d.String()
	}
	objD, minD, relD := put(obj), put(minb), put(rel)
	m := &manifest.Manifest{Version: manifest.Version, Program: a.Program, Revision: a.Revision, BuildID: a.BuildID,
		Arch: a.Arch, Kernel: a.Kernel, Compiler: "clang version 19.1.7", Flags: []string{}, CreatedAt: now,
		Files: map[string]manifest.File{
			manifest.FileObject:    {Name: a.Program + ".bpf.o", SHA256: objD, Size: int64(len(obj))},
			manifest.FileMinBTF:    {Name: a.Program + ".min.btf", SHA256: minD, Size: int64(len(minb))},
			manifest.FileRelocated: {Name: a.Program + ".relocated.bpf.o", SHA256: relD, Size: int64(len(rel))},
		}, Status: a.Status, Report: *a.Report}
	manD, err := key.SignAndStore(ctx, blobs, m)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `UPDATE artifacts SET minbtf_blob = ?, minbtf_size = ?, relocated_blob = ?,
		relocated_size = ?, manifest_blob = ? WHERE id = ?`, minD, len(minb), relD, len(rel), manD, out.ArtifactID); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `UPDATE builds SET object_blob = ?, object_size = ? WHERE id = ?`,
		objD, len(obj), a.BuildID); err != nil {
		tb.Fatal(err)
	}
	return out
}
