package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/btftest"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// TestBTFHubTreeAsItIs imports a btfhub-archive tree as trees are in the
// wild: old-kernel BTF with duplicate type definitions (as pahole left them
// in 4.18/4.19), an aarch64 directory, and a broken file in the middle. Every
// good file imports, the bad one is named, the summary counts them and the
// exit status is 1; a .btf.tar.xz whose entry is not named after a release
// imports under --id.
func TestBTFHubTreeAsItIs(t *testing.T) {
	host, err := btftest.HostBTF()
	if err != nil {
		testenv.Require(t, "kernel BTF", err.Error())
	}
	old, err := btftest.Rewrite{Identical: []string{"task_struct", "file", "sk_buff"}}.Apply(host)
	if err != nil {
		t.Fatal(err)
	}
	file, err := btftest.BTFHubFile("4.19.0-26-cloud-amd64.btf", old)
	if err != nil {
		t.Fatal(err)
	}
	f := startFarm(t, "")
	root := t.TempDir()
	paths, err := btftest.WriteTree(root, map[string][]byte{
		"centos/8/aarch64/4.18.0-305.el8.aarch64.btf.tar.xz": file,
		"centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz":   file,
		"debian/10/x86_64/4.19.0-25-cloud-amd64.btf.tar.xz":  file[:len(file)/3], // truncated
		"debian/10/x86_64/4.19.0-26-cloud-amd64.btf.tar.xz":  file,
		"ubuntu/18.04/riscv64/4.19.0-1-generic.btf.tar.xz":   file, // unsupported arch
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{paths["debian/10/x86_64/4.19.0-25-cloud-amd64.btf.tar.xz"], paths["ubuntu/18.04/riscv64/4.19.0-1-generic.btf.tar.xz"]}

	r := f.cli("kernels", "import", root)
	if r.code != 1 {
		t.Fatalf("import tree with bad files: exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 3 {
		t.Fatalf("stderr: %d lines, want one per refused file and a summary:\n%s", len(lines), r.stderr)
	}
	for i, p := range bad {
		if !strings.HasPrefix(lines[i], "bpfarm: refused "+p+": ") {
			t.Errorf("stderr line %d: %q, want it to name %s", i, lines[i], p)
		}
	}
	if !strings.Contains(lines[2], "imported 3, unchanged 0, refused 2") {
		t.Errorf("summary %q", lines[2])
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)

	var ks []api.Kernel
	if r := f.cli("kernels", "list", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &ks) != nil {
		t.Fatalf("kernels list: %d %s", r.code, r.stderr)
	}
	ids := map[string]bool{}
	for _, k := range ks {
		ids[k.ID] = true
	}
	for _, id := range []string{"centos/8/arm64/4.18.0-305.el8.aarch64", "centos/8/x86_64/4.18.0-305.el8.x86_64", "debian/10/x86_64/4.19.0-26-cloud-amd64"} {
		if !ids[id] {
			t.Errorf("kernel %s not in the archive: %v", id, ids)
		}
	}
	if len(ks) != 3 {
		t.Errorf("%d kernels, want 3: %v", len(ks), ids)
	}

	// The same tree packed in a tar (tar cf tree.tar -C ROOT .) and sent as
	// one upload: the API goes on past the bad files too, and names them.
	packed := filepath.Join(t.TempDir(), "tree.tar")
	if out, err := exec.Command("tar", "cf", packed, "-C", root, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	r = f.cli("kernels", "import", packed)
	if r.code != 1 || !strings.Contains(r.stderr, "imported 0, unchanged 3, refused 2") ||
		!strings.Contains(r.stderr, "bpfarm: refused tree.tar:debian/10/x86_64/4.19.0-25-cloud-amd64.btf.tar.xz: ") ||
		!strings.Contains(r.stderr, "bpfarm: refused tree.tar:ubuntu/18.04/riscv64/4.19.0-1-generic.btf.tar.xz: ") {
		t.Errorf("import packed tree: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	body, _ := os.Open(packed)
	var pres api.KernelImport
	code, raw := f.api("POST", "/api/v1/kernels?name=tree.tar", f.admin, "application/octet-stream", body, &pres)
	body.Close()
	if code != 200 || len(pres.Kernels) != 3 || len(pres.Refused) != 2 {
		t.Errorf("POST packed tree: %d %s", code, raw)
	}

	// The tree without its bad files: nothing new, exit 0, the summary.
	for _, p := range bad {
		os.Remove(p)
	}
	r = f.cli("kernels", "import", root)
	if r.code != 0 || !strings.Contains(r.stdout, "imported 0, unchanged 3, refused 0") {
		t.Errorf("re-import: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// --id names a kernel whose file's entry is not named after a release,
	// with an arch alias that is stored canonically; the API reads the
	// alias too.
	unnamed := filepath.Join(t.TempDir(), "vmlinux.btf.tar.xz")
	data, err := btftest.BTFHubFile("vmlinux", old)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(unnamed, data, 0o644)
	var res api.KernelImport
	r = f.cli("kernels", "import", "--json", "--id", "rhel/8/aarch64/4.18.0-80.el8.aarch64", unnamed)
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res.Kernels) != 1 {
		t.Fatalf("import --id: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if got := res.Kernels[0].Kernel.ID; got != "rhel/8/arm64/4.18.0-80.el8.aarch64" {
		t.Errorf("import --id with aarch64: stored as %s", got)
	}
	var k api.Kernel
	if code, body := f.api("GET", "/api/v1/kernels/rhel/8/arm64/4.18.0-80.el8.aarch64", f.admin, "", nil, &k); code != 200 {
		t.Errorf("GET kernel: %d %s", code, body)
	}
	// --id wins over the release an entry names.
	r = f.cli("kernels", "import", "--json", "--id", "debian/10/amd64/4.19.0-99-cloud-amd64", paths["centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz"])
	if r.code != 0 || !strings.Contains(r.stdout, `"debian/10/x86_64/4.19.0-99-cloud-amd64"`) {
		t.Errorf("import --id over the entry's release: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
