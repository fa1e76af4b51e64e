package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// newTypesSource needs kernel types that Debian 12's 6.1 kernels lack and
// its 6.12 kernels have (struct bpf_iter_num, 6.4+): it compiles only
// against a new kernel's vmlinux.h, and CO-RE then relocates it for every
// kernel (the existence check is false on old ones).
const newTypesSource = `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

__u64 iter_size;

SEC("tracepoint/syscalls/sys_enter_getpid")
int probe_new_types(void *ctx)
{
	if (bpf_core_field_exists(struct bpf_iter_num, __opaque))
		iter_size = bpf_core_field_size(struct bpf_iter_num, __opaque);
	return 0;
}
`

// TestReferenceNewestARM64: the reference vmlinux.h of arm64 is the newest
// arm64 kernel of the archive by release, whichever came first: with real
// Debian arm64 kernels 6.1 and 6.12, a program that needs 6.12's types
// fails to build while only 6.1 is there, and builds once 6.12 arrives
// (imported after 6.1, or before it).
func TestReferenceNewestARM64(t *testing.T) {
	old := testenv.DebianKernelArch(t, "6.1", "arm64")
	newer := testenv.DebianKernelArch(t, "6.12", "arm64")
	src := filepath.Join(t.TempDir(), "newtypes")
	os.MkdirAll(src, 0o755)
	if err := os.WriteFile(filepath.Join(src, "newtypes.bpf.c"), []byte(newTypesSource), 0o644); err != nil {
		t.Fatal(err)
	}
	importDeb := func(f *farm, deb string) api.Kernel {
		t.Helper()
		r := f.cli("kernels", "import", "--json", deb)
		var res api.KernelImport
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res.Kernels) != 1 {
			t.Fatalf("import %s: %d %s %s", filepath.Base(deb), r.code, r.stdout, r.stderr)
		}
		k := res.Kernels[0].Kernel
		if k.Arch != "arm64" {
			t.Fatalf("%s imported as %s", filepath.Base(deb), k.ID)
		}
		return k
	}
	reference := func(f *farm) string {
		t.Helper()
		var ks []api.Kernel
		if r := f.cli("kernels", "list", "--arch", "arm64", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &ks) != nil {
			t.Fatalf("kernels list: %d %s", r.code, r.stderr)
		}
		def := ""
		for _, k := range ks {
			if k.Default {
				def = k.ID
			}
		}
		return def
	}
	push := func(f *farm) result {
		// aarch64 is an alias of arm64: the build is for arm64.
		return f.cli("push", src, "--arch", "aarch64", "--wait")
	}

	t.Run("old first", func(t *testing.T) {
		f := startFarm(t, "")
		k61 := importDeb(f, old)
		if ref := reference(f); ref != k61.ID {
			t.Fatalf("reference %q with only %s", ref, k61.ID)
		}
		// Only the old kernel: its vmlinux.h lacks the type.
		r := push(f)
		if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "bpf_iter_num") {
			t.Fatalf("push against 6.1 only: exit %d, want 1 naming bpf_iter_num\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		k612 := importDeb(f, newer)
		if ref := reference(f); ref != k612.ID {
			t.Fatalf("reference %q after importing %s, want it", ref, k612.ID)
		}
		// The vmlinux.h digest is in the cache key: the same sources build
		// again, now against 6.12, and relocate for both kernels.
		if r := push(f); r.code != 0 {
			t.Fatalf("push with 6.12 in the archive: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		checkRelocated(t, f, "newtypes", k61.ID, k612.ID)
	})
	t.Run("new first", func(t *testing.T) {
		f := startFarm(t, "")
		k612 := importDeb(f, newer)
		k61 := importDeb(f, old)
		if ref := reference(f); ref != k612.ID {
			t.Fatalf("reference %q, want the newest, %s", ref, k612.ID)
		}
		if r := push(f); r.code != 0 {
			t.Fatalf("push: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		checkRelocated(t, f, "newtypes", k61.ID, k612.ID)

		// An admin pins the old kernel (by an aarch64 alias): compiles use
		// it, and the program no longer builds; unpinned, the newest is the
		// reference again.
		pinned := strings.Replace(k61.ID, "/arm64/", "/aarch64/", 1)
		if r := f.cli("kernels", "pin", pinned); r.code != 0 || !strings.Contains(r.stdout, k61.ID+" (pinned)") {
			t.Fatalf("kernels pin: %d %s %s", r.code, r.stdout, r.stderr)
		}
		var refs []api.ReferenceKernel
		if r := f.cli("kernels", "reference", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &refs) != nil {
			t.Fatalf("kernels reference: %d %s %s", r.code, r.stdout, r.stderr)
		}
		found := false
		for _, rk := range refs {
			if rk.Arch == "arm64" {
				found = rk.Kernel == k61.ID && rk.Pinned
			}
		}
		if !found || reference(f) != k61.ID {
			t.Errorf("after pin: %+v, list says %s", refs, reference(f))
		}
		if r := push(f); r.code != 1 {
			t.Errorf("push with 6.1 pinned: exit %d, want 1", r.code)
		}
		if r := f.cli("kernels", "pin", "debian/12/arm64/0.0.1-nope"); r.code != 1 {
			t.Errorf("pin of a kernel not in the archive: exit %d %s", r.code, r.stderr)
		}
		if r := f.cli("kernels", "unpin", "aarch64"); r.code != 0 {
			t.Fatalf("kernels unpin: %d %s", r.code, r.stderr)
		}
		if ref := reference(f); ref != k612.ID {
			t.Errorf("after unpin: reference %s, want %s", ref, k612.ID)
		}
		if r := f.cli("kernels", "unpin", "arm64"); r.code != 1 {
			t.Errorf("unpin without a pin: exit %d", r.code)
		}
		if r := push(f); r.code != 0 {
			t.Errorf("push after unpin: exit %d %s", r.code, r.stderr)
		}
	})
}

// checkRelocated waits for the program's artifacts for kernels and checks
// that every program relocates ok on each.
func checkRelocated(t *testing.T, f *farm, program string, kernels ...string) {
	t.Helper()
	as := waitArtifacts(t, f, program, len(kernels))
	got := map[string]bool{}
	for _, a := range as {
		got[a.Kernel] = true
		if a.Report == nil {
			t.Errorf("%s on %s: no report", program, a.Kernel)
			continue
		}
		for _, p := range a.Report.Programs {
			if p.Status != "ok" {
				t.Errorf("%s on %s: %s %s %s", program, a.Kernel, p.Name, p.Status, p.Error)
			}
		}
	}
	for _, k := range kernels {
		if !got[k] {
			t.Errorf("no artifact of %s for %s", program, k)
		}
	}
}
