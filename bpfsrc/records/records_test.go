package records

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// The tests compile small programs with the real clang and the farm's
// <bpfarm.h>.

const prelude = `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpfarm.h>
char LICENSE[] SEC("license") = "GPL";
struct event { int pid; char comm[16]; };
struct other { long a, b; };
struct ringbuf { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); };
struct perfbuf { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); };
`

func compile(t *testing.T, src string) *ebpf.CollectionSpec {
	t.Helper()
	clang, err := exec.LookPath("clang-19")
	if err != nil {
		if os.Getenv("BPFARM_TEST_STRICT") != "" {
			t.Fatalf("clang-19: %v", err)
		}
		t.Skipf("clang-19: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.bpf.c"), []byte(prelude+src), 0o644); err != nil {
		t.Fatal(err)
	}
	farm, err := filepath.Abs("../compile/farm")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-I", farm, "-I", "/usr/include/x86_64-linux-gnu",
		"-c", filepath.Join(dir, "p.bpf.c"), "-o", filepath.Join(dir, "p.o"))
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("clang: %v\n%s", err, stderr.String())
	}
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(dir, "p.o"))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestFind(t *testing.T) {
	for _, tc := range []struct {
		name, src  string
		origin     Origin
		typ        string
		reasonPart string
	}{
		{"declared", `struct ringbuf rb SEC(".maps"); BPFARM_RECORD(rb, struct other);
SEC("tp/x/y") int p(void *ctx) { struct event e = {}; bpf_ringbuf_output(&rb, &e, sizeof(e), 0); return 0; }`,
			Declared, "other", "BPFARM_RECORD(rb, struct other)"},
		{"reserve by size", `struct ringbuf rb SEC(".maps"); struct event *keep_in_btf(void) { return 0; }
SEC("tp/x/y") int p(void *ctx) { struct event *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0); if (!e) return 0; e->pid = 1; bpf_ringbuf_submit(e, 0); return 0; }`,
			Inferred, "event", "bpf_ringbuf_reserve of 20 bytes, the size of struct event"},
		{"not in BTF", `struct ringbuf rb SEC(".maps");
SEC("tp/x/y") int p(void *ctx) { struct event *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0); if (!e) return 0; e->pid = 1; bpf_ringbuf_submit(e, 0); return 0; }`,
			"", "", "no struct of that size is in the object's BTF"},
		{"perf from stack", `struct perfbuf pb SEC(".maps"); const struct other zero;
SEC("tp/x/y") int p(void *ctx) { struct other o = {1, 2}; bpf_perf_event_output(ctx, &pb, BPF_F_CURRENT_CPU, &o, sizeof(o)); return 0; }`,
			Inferred, "other", "bpf_perf_event_output of 16 bytes"},
		{"perf from heap map, variable size", `struct perfbuf pb SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, struct event); } heap SEC(".maps");
SEC("tp/x/y") int p(void *ctx) { int k = 0; struct event *e = bpf_map_lookup_elem(&heap, &k); if (!e) return 0;
  e->pid = bpf_get_prandom_u32(); bpf_perf_event_output(ctx, &pb, BPF_F_CURRENT_CPU, e, 4 + (e->pid & 15)); return 0; }`,
			Inferred, "event", "a value of the map heap"},
		{"from a global", `struct ringbuf rb SEC(".maps"); int pad; struct other g;
SEC("tp/x/y") int p(void *ctx) { g.a = pad; bpf_ringbuf_output(&rb, &g, sizeof(g), 0); return 0; }`,
			Inferred, "other", "the global g"},
		{"ambiguous", `struct ringbuf rb SEC(".maps"); struct twin { long x, y; }; const struct twin z1; const struct other z2;
SEC("tp/x/y") int p(void *ctx) { struct twin t = {bpf_get_prandom_u32()}; bpf_ringbuf_output(&rb, &t, sizeof(t), 0);
  struct other o = {0}; bpf_ringbuf_output(&rb, &o, sizeof(o), 0); return 0; }`,
			"", "", "ambiguous"},
		{"unknown size", `struct ringbuf rb SEC(".maps");
SEC("tp/x/y") int p(void *ctx) { char buf[64] = {}; bpf_ringbuf_output(&rb, buf, bpf_get_prandom_u32() & 63, 0); return 0; }`,
			"", "", "not a constant"},
		{"unused", `struct ringbuf rb SEC(".maps");
SEC("tp/x/y") int p(void *ctx) { return 0; }`,
			"", "", "no program writes to it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := compile(t, tc.src)
			got := Find(spec)
			if len(got) != 1 {
				t.Fatalf("found %d maps", len(got))
			}
			var r *Record
			for _, r = range got {
			}
			if r.Origin != tc.origin || !strings.Contains(r.Reason, tc.reasonPart) {
				t.Fatalf("origin %q reason %q", r.Origin, r.Reason)
			}
			if tc.typ == "" {
				if r.Type != nil {
					t.Fatalf("type %v", r.Type)
				}
				return
			}
			if r.Type == nil || r.Type.TypeName() != tc.typ {
				t.Fatalf("type %v, want %s", r.Type, tc.typ)
			}
		})
	}
}
