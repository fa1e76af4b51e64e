package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/manifest"
)

// TestKernelArchive drives the BTF archive through the CLI: real kernels
// (this host, two Debian packages, a btfhub tree), relocation of every
// example for every kernel, artifacts fetched, verified and loaded.
func TestKernelArchive(t *testing.T) {
	deb61 := testenv.DebianKernel(t, "6.1")
	deb612 := testenv.DebianKernel(t, "6.12")
	f := startFarm(t, "")

	// Programs first: importing kernels afterwards relocates them.
	dirs := exampleDirs(t)
	for _, dir := range dirs {
		if r := f.cli("push", dir, "--wait"); r.code != 0 {
			t.Fatalf("push %s: %d %s", dir, r.code, r.stderr)
		}
	}
	var imported api.KernelImport
	for _, args := range [][]string{{"--host"}, {deb61}, {deb612}} {
		r := f.cli(append([]string{"kernels", "import", "--json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("kernels import %v: %d %s", args, r.code, r.stderr)
		}
		var res api.KernelImport
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Kernels) != 1 {
			t.Fatalf("kernels import %v: %v %s", args, err, r.stdout)
		}
		k := res.Kernels[0]
		if !k.Created || k.Queued != len(dirs) {
			t.Errorf("import %v: created %v, queued %d relocations, want %d", args, k.Created, k.Queued, len(dirs))
		}
		imported.Kernels = append(imported.Kernels, k)
		t.Logf("imported %s: BTF %d bytes, %d modules, source %s", k.Kernel.ID, k.Kernel.BTF.Size, k.Kernel.Modules, k.Kernel.Source)
	}
	host, k61, k612 := imported.Kernels[0].Kernel, imported.Kernels[1].Kernel, imported.Kernels[2].Kernel
	if !strings.HasPrefix(k61.ID, "debian/12/x86_64/6.1.0-") || !strings.HasPrefix(k612.ID, "debian/12/x86_64/6.12.") {
		t.Fatalf("Debian kernel ids %s, %s", k61.ID, k612.ID)
	}
	if k61.Modules < 100 || k612.Modules < 100 || !k61.HasConfig || !k61.HasImage {
		t.Errorf("Debian kernels lack modules, config or image: %+v %+v", k61, k612)
	}
	// Importing the same package again changes nothing.
	if r := f.cli("kernels", "import", "--json", deb61); r.code != 0 || !strings.Contains(r.stdout, `"created": false`) {
		t.Errorf("re-import: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// A btfhub-archive tree made from the 6.1 kernel's BTF.
	code, btf61 := f.api("GET", "/api/v1/blobs/"+k61.BTF.Digest, f.admin, "", nil, nil)
	if code != 200 {
		t.Fatalf("BTF blob: %d", code)
	}
	tree := t.TempDir()
	hubID := "ubuntu/22.04/x86_64/" + k61.Release
	writeBTFTarXz(t, filepath.Join(tree, hubID+".btf.tar.xz"), k61.Release, btf61)
	r := f.cli("kernels", "import", "--json", tree)
	if r.code != 0 || !strings.Contains(r.stdout, hubID) {
		t.Fatalf("import btfhub tree: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// Every example is relocated for every kernel.
	kernels := []string{host.ID, k61.ID, k612.ID, hubID}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		as := waitArtifacts(t, f, name, len(kernels))
		for _, a := range as {
			if a.State != api.ArtifactDone || a.Report == nil || len(a.Report.Programs) == 0 || a.MinBTF == nil || a.Relocated == nil {
				t.Errorf("%s for %s: %+v", name, a.Kernel, a)
				continue
			}
			var detail []string
			for _, p := range a.Report.Programs {
				detail = append(detail, p.Name+":"+p.Status)
			}
			t.Logf("%s on %s: %s %v (min BTF %d bytes)", name, a.Kernel, a.Status, detail, a.MinBTF.Size)
		}
	}

	// The artifact for this host: fetched, verified, loadable without BTF lookups.
	out := t.TempDir()
	r = f.cli("artifact", "get", "execsnoop", "--kernel", host.ID, "-o", out)
	if r.code != 0 {
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
	for role, file := range m.Files {
		data, err := os.ReadFile(filepath.Join(out, file.Name))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.VerifyFile(role, data); err != nil {
			t.Error(err)
		}
	}
	if m.Kernel != host.ID || m.Program != "execsnoop" || m.Signature == nil || len(m.Report.Programs) == 0 {
		t.Errorf("manifest: %+v", m)
	}
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("bpfarm-e2e-%d", os.Getpid()))
	defer os.RemoveAll(pin)
	if b, err := exec.Command("bpftool", "prog", "loadall", filepath.Join(out, m.Files[manifest.FileRelocated].Name), pin).CombinedOutput(); err != nil {
		t.Errorf("bpftool prog loadall of the pre-relocated object: %v: %s", err, b)
	}

	// The same release under another distro entry resolves; an unknown
	// kernel gets a 404 naming the nearest ones.
	other := "ubuntu/24.04/x86_64/" + k612.Release
	if r := f.cli("artifact", "get", "execsnoop", "--kernel", other, "-o", t.TempDir()); r.code != 0 || !strings.Contains(r.stdout, "matched by release") {
		t.Errorf("artifact get by release: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = f.cli("artifact", "get", "execsnoop", "--kernel", "debian/12/x86_64/6.1.0-99-cloud-amd64", "-o", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "nearest: debian/12/x86_64/6.1.0-") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("unknown kernel: %d %q", r.code, r.stderr)
	}
}

// TestKernelImportRefusals: broken inputs get one clear line and store nothing.
func TestKernelImportRefusals(t *testing.T) {
	f := startFarm(t, "")
	dir := t.TempDir()
	garbage := make([]byte, 4096)
	rand.Read(garbage)
	hostBTF, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		t.Skip("no /sys/kernel/btf/vmlinux")
	}
	cases := map[string][]byte{
		"broken.btf.tar.xz": garbage,
		"truncated.btf":     hostBTF[:len(hostBTF)/2],
		"random.deb":        append([]byte("!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n"), garbage...),
		"empty":             {},
	}
	for name, data := range cases {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		r := f.cli("kernels", "import", "--id", "debian/12/x86_64/6.1.0-1-amd64", p)
		msg := strings.TrimSpace(r.stderr)
		if r.code != 1 || msg == "" || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "bpfarm: ") {
			t.Errorf("%s: exit %d, stderr %q (want exit 1 and one line)", name, r.code, r.stderr)
		}
		t.Logf("%s: %s", name, msg)
	}
	if r := f.cli("kernels", "list", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("refused imports stored something: %s", r.stdout)
	}
}

// TestPerKernel: sources that are not CO-RE compile against each kernel's
// own headers and LINUX_VERSION_CODE.
func TestPerKernel(t *testing.T) {
	f := startFarm(t, "")
	if r := f.cli("kernels", "import", "--host"); r.code != 0 {
		t.Fatalf("import host: %d %s", r.code, r.stderr)
	}
	src := filepath.Join(t.TempDir(), "legacy.bpf.c")
	os.WriteFile(src, []byte(`#include "vmlinux.h"
#include <linux/version.h>
#include <bpf/bpf_helpers.h>
_Static_assert(LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0), "built against the target kernel's version");
__u32 kversion SEC("version") = LINUX_VERSION_CODE;
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } hits SEC(".maps");
SEC("tp/syscalls/sys_enter_getpid") int count(void *ctx) {
	__u32 k = 0; __u64 *v = bpf_map_lookup_elem(&hits, &k);
	if (v) __sync_fetch_and_add(v, 1);
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
`), 0o644)
	r := f.cli("push", src, "--per-kernel", "--wait", "--json")
	if r.code != 0 {
		t.Fatalf("push --per-kernel: %d %s %s", r.code, r.stdout, r.stderr)
	}
	var res api.PushResult
	json.Unmarshal([]byte(r.stdout), &res)
	if len(res.Builds) != 1 || res.Builds[0].Kernel == "" || res.Builds[0].State != api.StateSucceeded {
		t.Fatalf("per-kernel builds: %+v", res.Builds)
	}
	as := waitArtifacts(t, f, "legacy", 1)
	if as[0].Kernel != res.Builds[0].Kernel || !as[0].PerKernel || as[0].State != api.ArtifactDone {
		t.Fatalf("per-kernel artifact: %+v", as[0])
	}
}

func waitArtifacts(t *testing.T, f *farm, program string, n int) []api.Artifact {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var as []api.Artifact
		f.api("GET", "/api/v1/artifacts?program="+program, f.admin, "", nil, &as)
		done := 0
		for _, a := range as {
			if a.State == api.ArtifactDone || a.State == api.ArtifactError {
				done++
			}
		}
		if len(as) == n && done == n {
			return as
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d artifacts, %d done, want %d", program, len(as), done, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeBTFTarXz writes a btfhub-archive file: xz of a tar holding one entry
// RELEASE.btf.
func writeBTFTarXz(t *testing.T, path, release string, btf []byte) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	var buf bytes.Buffer
	xw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(xw)
	tw.WriteHeader(&tar.Header{Name: release + ".btf", Mode: 0o644, Size: int64(len(btf))})
	tw.Write(btf)
	tw.Close()
	xw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
