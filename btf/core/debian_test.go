package core

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// debianSeries are the Debian kernels the tests relocate against, besides
// the host's: bookworm's 6.1 and its backports' 6.12, with module BTF.
var debianSeries = []string{"6.1", "6.12"}

var (
	debianMu    sync.Mutex
	debianCache = make(map[string]*testKernel)
)

// debianKernel imports the Debian kernel package of series (downloading it
// once into the shared cache) and loads its BTF, vmlinux and modules.
func debianKernel(t testing.TB, series string) testKernel {
	t.Helper()
	debianMu.Lock()
	defer debianMu.Unlock()
	if tk := debianCache[series]; tk != nil {
		return *tk
	}
	deb := testenv.DebianKernel(t, series)
	var tk *testKernel
	err := source.Import(context.Background(), deb, source.Options{TempDir: t.TempDir()}, func(sk *source.Kernel) error {
		if tk != nil {
			return fmt.Errorf("more than one kernel in %s", deb)
		}
		modules := make(map[string][]byte, len(sk.Modules))
		for _, m := range sk.Modules {
			modules[m.Name] = m.BTF
		}
		id := "debian-" + series
		if sk.ID.Release != "" {
			id = "debian-" + sk.ID.Release
		}
		k, err := LoadKernel(id, sk.BTF, modules)
		if err != nil {
			return err
		}
		tk = &testKernel{k: k, vmlinux: sk.BTF, modules: modules}
		return nil
	})
	if err != nil {
		t.Fatalf("import %s: %v", deb, err)
	}
	if tk == nil {
		t.Fatalf("no kernel in %s", deb)
	}
	debianCache[series] = tk
	return *tk
}

// debianKernels returns the Debian kernels, or none under -short.
func debianKernels(t *testing.T) []testKernel {
	t.Helper()
	if testing.Short() {
		return nil
	}
	var out []testKernel
	for _, s := range debianSeries {
		out = append(out, debianKernel(t, s))
	}
	return out
}

// TestDebianRealField relocates testdata/mtime.bpf.c against Debian 6.1
// and 6.12: struct inode has "struct timespec64 i_mtime" in 6.1 and
// "time64_t i_mtime_sec" in 6.12 (found by diffing their BTF).
func TestDebianRealField(t *testing.T) {
	f := setup(t)
	if testing.Short() {
		t.Skip("Debian kernels are not imported with -short")
	}
	o := f.object(t, "mtime")
	old := debianKernel(t, "6.1")
	cur := debianKernel(t, "6.12")

	want := map[*Kernel]map[string][]Poison{
		old.k: {
			"exe_mtime":     {{"field_byte_offset", "inode.i_mtime_sec", 25, true}},
			"exe_mtime_old": nil,
		},
		cur.k: {
			"exe_mtime":     {{"field_byte_offset", "inode.i_mtime.tv_sec", 30, true}},
			"exe_mtime_old": {{"field_byte_offset", "inode.i_mtime.tv_sec", 22, false}},
		},
		f.host: {
			"exe_mtime":     {{"field_byte_offset", "inode.i_mtime.tv_sec", 30, true}},
			"exe_mtime_old": {{"field_byte_offset", "inode.i_mtime.tv_sec", 22, false}},
		},
	}
	for k, progs := range want {
		r := relocate(t, o, k).Report
		for name, poisons := range progs {
			pr := progReport(t, r, name)
			status := StatusOK
			for _, p := range poisons {
				if !p.Guarded {
					status = StatusPoisoned
				}
			}
			if pr.Status != status || !jsonEqual(pr.Poisoned, poisons) {
				t.Errorf("%s: %s: got %s %+v, want %s %+v", k.ID, name, pr.Status, pr.Poisoned, status, poisons)
			}
		}
	}
}

// TestDebianTargets checks kfunc targets across Debian kernels:
// bpf_task_acquire and bpf_task_release appeared in 6.2.
func TestDebianTargets(t *testing.T) {
	f := setup(t)
	if testing.Short() {
		t.Skip("Debian kernels are not imported with -short")
	}
	o := f.object(t, "kfunc")
	for series, status := range map[string]string{"6.1": TargetMissing, "6.12": TargetPresent} {
		tk := debianKernel(t, series)
		pr := progReport(t, relocate(t, o, tk.k).Report, "acquire")
		want := []Target{
			{TargetBTFTracepoint, "sched_process_fork", TargetPresent},
			{TargetKfunc, "bpf_task_acquire", status},
			{TargetKfunc, "bpf_task_release", status},
		}
		if !jsonEqual(pr.Targets, want) {
			t.Errorf("%s: targets %+v, want %+v", tk.k.ID, pr.Targets, want)
		}
	}
}
