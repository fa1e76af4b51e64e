package observe_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// fixtureSrc is an XDP program that, each time it runs (BPF_PROG_TEST_RUN),
// writes one struct event into a ring buffer, counts into a hash map keyed
// by a struct and into a per-CPU histogram, and bumps a .bss global.
const fixtureSrc = `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpfarm.h>
char LICENSE[] SEC("license") = "GPL";

struct event { __u32 seq; __u32 cpu; __u64 ts; char comm[16]; __s32 ret; __u32 flags; };
struct key { __u32 id; char name[8]; };
struct hist { __u32 slots[8]; };

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 16 << 20); } events SEC(".maps");
BPFARM_RECORD(events, struct event);
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16); __type(key, struct key); __type(value, __u64); } counts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct hist); } lat SEC(".maps");

__u32 seq;
const volatile __u32 step = 1;

SEC("xdp")
int produce(struct xdp_md *ctx)
{
	struct event e = {};
	struct key k = {};
	struct hist *h;
	__u64 one = 1, *v;
	__u32 zero = 0;

	e.seq = seq;
	seq += step;
	e.cpu = bpf_get_smp_processor_id();
	e.ts = bpf_ktime_get_ns();
	__builtin_memcpy(e.comm, "bench", 6);
	e.ret = -1;
	bpf_ringbuf_output(&events, &e, sizeof(e), 0);

	k.id = e.seq & 3;
	__builtin_memcpy(k.name, "key", 4);
	v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&counts, &k, &one, BPF_NOEXIST);
	h = bpf_map_lookup_elem(&lat, &zero);
	if (h)
		h->slots[e.seq & 7]++;
	return XDP_PASS;
}
`

// fixture is the loaded fixture program.
type fixture struct {
	name string
	opt  loader.Options
	prog *ebpf.Program
}

// perfFixtureSrc is an XDP program that, each time it runs, writes one
// struct event (numbered from 0) into a perf event array.
const perfFixtureSrc = `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpfarm.h>
char LICENSE[] SEC("license") = "GPL";

struct event { __u32 seq; __u32 cpu; __u64 ts; char comm[16]; __s32 ret; __u32 flags; };

struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } pevents SEC(".maps");
BPFARM_RECORD(pevents, struct event);

__u32 seq;

SEC("xdp")
int produce(struct xdp_md *ctx)
{
	struct event e = {};

	e.seq = seq++;
	e.cpu = bpf_get_smp_processor_id();
	e.ts = bpf_ktime_get_ns();
	__builtin_memcpy(e.comm, "perf", 5);
	bpf_perf_event_output(ctx, &pevents, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return XDP_PASS;
}
`

// newFixture compiles the fixture with the real clang and loads it with
// the loader, as the agent does.
func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	return newFixtureOf(tb, "observe-fixture", fixtureSrc)
}

// newFixtureOf compiles src (an XDP program named produce) with the real
// clang and loads it as the set name.
func newFixtureOf(tb testing.TB, name, src string) *fixture {
	tb.Helper()
	if os.Geteuid() != 0 {
		testenv.Require(tb, "root", "loading BPF programs needs root")
	}
	clang, err := exec.LookPath("clang-19")
	if err != nil {
		testenv.Require(tb, "clang-19", "the fixture is compiled with clang-19 (make deps)")
	}
	dir := tb.TempDir()
	farm, _ := filepath.Abs("../../bpfsrc/compile/farm")
	srcFile := filepath.Join(dir, "fixture.bpf.c")
	if err := os.WriteFile(srcFile, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-I", farm, "-I", "/usr/include/x86_64-linux-gnu", "-c", srcFile, "-o", srcFile+".o")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("clang: %v\n%s", err, stderr.String())
	}
	obj, err := os.ReadFile(srcFile + ".o")
	if err != nil {
		tb.Fatal(err)
	}
	f := &fixture{
		name: name,
		opt: loader.Options{
			PinDir:   filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-observe-%d-%s", os.Getpid(), filepath.Base(dir))),
			StateDir: filepath.Join(dir, "state"),
			NoAttach: true,
		},
	}
	l, err := loader.Load(context.Background(), &loader.Artifact{Name: f.name, Revision: "test", Object: obj}, f.opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if f.prog != nil {
			f.prog.Close()
		}
		loader.Unload(f.name, f.opt)
		os.RemoveAll(f.opt.PinDir)
	})
	f.prog, err = ebpf.LoadPinnedProgram(l.Program("produce").Pinned, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// run runs the program n times, writing n records.
func (f *fixture) run(tb testing.TB, n int) {
	tb.Helper()
	if n == 0 {
		return
	}
	if _, err := f.prog.Run(&ebpf.RunOptions{Data: make([]byte, 64), Repeat: uint32(n)}); err != nil {
		tb.Fatal(err)
	}
}
