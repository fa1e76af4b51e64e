package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/realworld"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// parityProgram is one program the parity test builds on the farm.
type parityProgram struct {
	name, path string
	cflags     []string
	// fixture is a loader test program, some written for the farm to
	// refuse (names that would escape the pin directory).
	fixture bool
}

// parityPrograms are every program the farm builds in the tests: the
// examples (but broken, which does not compile), the loader's test
// programs and the real-world programs.
func parityPrograms(t *testing.T, usdtTarget string) []parityProgram {
	var ps []parityProgram
	ents, err := os.ReadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != "broken" {
			ps = append(ps, parityProgram{name: e.Name(), path: filepath.Join("../../examples", e.Name())})
		}
	}
	files, _ := filepath.Glob("../../client/loader/testdata/*.bpf.c")
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bpf.c")
		ps = append(ps, parityProgram{name: "loader-" + name, path: f, fixture: true})
	}
	for _, p := range realworld.Programs {
		pp := parityProgram{name: p.Name, path: filepath.Join("../../internal/realworld/programs", p.Name)}
		if p.NeedsTarget {
			pp.cflags = []string{"--cflag", `-DTARGET="` + usdtTarget + `"`}
		}
		ps = append(ps, pp)
	}
	if len(ps) < 10 {
		t.Fatalf("only %d programs: %v", len(ps), ps)
	}
	return ps
}

// TestNoAttachParity: every program the farm builds that `bpftool prog
// loadall` (libbpf) loads on this host, `bpfarm-agent load --no-attach`
// loads too, with the same programs. An object bpftool refuses is skipped
// with libbpf's reason (a hook this kernel lacks or denies: kprobes,
// fentry/fexit/fmod_ret, lsm; a program written to be rejected).
func TestNoAttachParity(t *testing.T) {
	root(t)
	f := startFarm(t)
	if r := f.cli("kernels", "import", "--host"); r.code != 0 {
		t.Fatalf("import host kernel: %s", r.stderr)
	}
	if r := f.cli("headers", "import", testenv.LibbpfHeaders(t), "--name", "libbpf-1.5"); r.code != 0 {
		t.Fatalf("headers import: %s", r.stderr)
	}
	var ks []api.Kernel
	if err := json.Unmarshal([]byte(f.cli("kernels", "list", "--json").stdout), &ks); err != nil || len(ks) != 1 {
		t.Fatalf("kernels: %v %+v", err, ks)
	}
	// The USDT program names a binary with the probe; loading without
	// attaching does not touch it.
	target, _ := os.Executable()
	env := agentEnv(t, f.url, readerToken(t, f))
	loaded := 0
	for _, p := range parityPrograms(t, target) {
		t.Run(p.name, func(t *testing.T) {
			args := append([]string{"push", p.path, "--name", p.name, "--wait"}, p.cflags...)
			if r := f.cli(args...); r.code != 0 {
				if p.fixture && r.code == 1 && strings.Contains(r.stderr, "failed:") {
					t.Skipf("the farm does not build it: %s", strings.TrimSpace(r.stderr))
				}
				t.Fatalf("push: %s%s", r.stdout, r.stderr)
			}
			out := t.TempDir()
			// The relocation for this kernel runs after the build.
			for deadline := time.Now().Add(2 * time.Minute); ; {
				r := f.cli("artifact", "get", p.name, "--kernel", ks[0].ID, "-o", out)
				if r.code == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("artifact get: %s", r.stderr)
				}
				time.Sleep(200 * time.Millisecond)
			}
			objs, _ := filepath.Glob(filepath.Join(out, "*.relocated.bpf.o"))
			if len(objs) != 1 {
				t.Fatalf("artifact files: %v", objs)
			}
			pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-parity-%d-%s", os.Getpid(), p.name))
			defer os.RemoveAll(pin)
			bt, berr := exec.Command("bpftool", "prog", "loadall", objs[0], pin).CombinedOutput()
			d := newAgentDirs(t)
			r := run(t, env, bin.agent, append([]string{"load", p.name, "--no-attach"}, d.flags()...)...)
			if r.code == 0 {
				defer run(t, env, bin.agent, append([]string{"unload", p.name}, d.flags()...)...)
			}
			if berr != nil {
				t.Skipf("bpftool prog loadall refuses it on this kernel (agent: exit %d): %s", r.code, libbpfReason(string(bt)))
			}
			if r.code != 0 {
				t.Fatalf("bpftool loads it, bpfarm-agent load --no-attach does not: %s", r.stderr)
			}
			var theirs []string
			ents, _ := os.ReadDir(pin)
			for _, e := range ents {
				theirs = append(theirs, e.Name())
			}
			var ours []string
			for _, ps := range status(t, env, d, p.name).Programs {
				ours = append(ours, ps.Name)
			}
			slices.Sort(ours)
			slices.Sort(theirs)
			if !slices.Equal(ours, theirs) {
				t.Fatalf("--no-attach loaded %v, bpftool prog loadall %v", ours, theirs)
			}
			loaded++
		})
	}
	// Every example and every real-world program loads here.
	if loaded < 7 {
		t.Errorf("only %d programs loaded by both", loaded)
	}
}

// libbpfReason picks the lines of bpftool's output that say why.
func libbpfReason(out string) string {
	var why []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.Contains(l, "strict mode") || strings.Contains(l, "legacy option") || l == "" {
			continue
		}
		if strings.HasPrefix(l, "libbpf:") || strings.HasPrefix(l, "Error:") || strings.Contains(l, "failed") {
			if len(l) > 160 {
				l = l[:160] + "..."
			}
			why = append(why, l)
		}
	}
	if len(why) > 3 {
		why = why[:3]
	}
	return strings.Join(why, " | ")
}
