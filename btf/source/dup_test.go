package source

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/internal/btftest"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/cilium/ebpf/btf"
)

// oldKernelBTF returns the host's BTF rewritten in the shape of
// btfhub-archive's 4.18/4.19 BTF: struct task_struct and struct file
// defined twice, identically, as pahole left them.
func oldKernelBTF(t testing.TB) []byte {
	t.Helper()
	host, err := btftest.HostBTF()
	if err != nil {
		testenv.Require(t, "kernel BTF", err.Error())
	}
	raw, err := btftest.Rewrite{Identical: []string{"task_struct", "file"}}.Apply(host)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Real BTF of old kernels holds duplicate definitions, which the archive
// accepts, as libbpf and bpftool do; a btfhub tree of such kernels
// imports, its aarch64 directories as arm64, and a bad file in the middle
// is named while every good file imports.
func TestImportDuplicateTypes(t *testing.T) {
	raw := oldKernelBTF(t)
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if ts, _ := spec.AnyTypesByName("task_struct"); len(ts) != 2 {
		t.Fatalf("fixture: %d task_struct, want 2", len(ts))
	}

	// Raw BTF.
	p := writeFile(t, t.TempDir(), "vmlinux.btf", raw)
	if k := mustImportOne(t, p, Options{}); !bytes.Equal(k.BTF, raw) {
		t.Error("raw BTF with duplicates: BTF changed")
	}

	file, err := btftest.BTFHubFile("4.18.0-305.el8.x86_64.btf", raw)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	paths, err := btftest.WriteTree(root, map[string][]byte{
		"centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz":   file,
		"centos/8/aarch64/4.18.0-305.el8.aarch64.btf.tar.xz": file,
		// In the middle, in lexical order: a truncated file.
		"debian/10/x86_64/4.19.0-26-cloud-amd64.btf.tar.xz": file[:len(file)/2],
		"ubuntu/18.04/amd64/4.19.0-1-generic.btf.tar.xz":    file,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []kernel.ID
	var refused []string
	err = Import(context.Background(), root, Options{Refused: func(fe *FormatError) { refused = append(refused, fe.Path) }},
		func(k *Kernel) error {
			if !bytes.Equal(k.BTF, raw) {
				t.Errorf("%s: BTF changed", k.ID)
			}
			got = append(got, k.ID)
			return nil
		})
	bad := paths["debian/10/x86_64/4.19.0-26-cloud-amd64.btf.tar.xz"]
	checkTreeError(t, err, root, 4, bad)
	if len(refused) != 1 || refused[0] != bad {
		t.Errorf("Refused called for %v, want %s", refused, bad)
	}
	want := []kernel.ID{
		{Distro: "centos", Version: "8", Arch: "arm64", Release: "4.18.0-305.el8.aarch64"},
		{Distro: "centos", Version: "8", Arch: "x86_64", Release: "4.18.0-305.el8.x86_64"},
		{Distro: "ubuntu", Version: "18.04", Arch: "x86_64", Release: "4.19.0-1-generic"},
	}
	if len(got) != len(want) {
		t.Fatalf("imported %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("kernel %d: %s, want %s", i, got[i], want[i])
		}
	}
	// The path names the kernel, whatever the entry's name.
	if got[0].Release != "4.18.0-305.el8.aarch64" {
		t.Errorf("tree path did not win over the entry's name: %s", got[0])
	}

	// Without the bad file, the tree imports with no error.
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := Import(context.Background(), root, Options{}, func(*Kernel) error { n++; return nil }); err != nil || n != 3 {
		t.Errorf("tree without the bad file: %d kernels, %v", n, err)
	}
}

// A .btf.tar.xz whose entry is not named after a release imports, with
// the release left for the caller (--id) to give.
func TestImportBTFHubFileUnnamedEntry(t *testing.T) {
	raw := oldKernelBTF(t)
	file, err := btftest.BTFHubFile("vmlinux", raw)
	if err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, t.TempDir(), "kernel.btf.tar.xz", file)
	k := mustImportOne(t, p, Options{})
	if k.ID != (kernel.ID{}) || !bytes.Equal(k.BTF, raw) {
		t.Errorf("ID %#v, BTF equal %v", k.ID, bytes.Equal(k.BTF, raw))
	}
	// In a tree, the path names it.
	root := t.TempDir()
	writeFile(t, root, filepath.Join("rhel", "8", "aarch64", "4.18.0-80.el8.aarch64.btf.tar.xz"), file)
	var ids []kernel.ID
	if err := Import(context.Background(), root, Options{}, func(k *Kernel) error { ids = append(ids, k.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0].String() != "rhel/8/arm64/4.18.0-80.el8.aarch64" {
		t.Errorf("tree: %v", ids)
	}
}
