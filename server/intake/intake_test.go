package intake_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/store"
)

type env struct {
	db     *store.DB
	intake *intake.Service
	dir    string
}

func newEnv(t *testing.T) env {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "bpfarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	blobs, err := blob.NewLocal(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	arch, err := archive.New(archive.Config{DB: db, Blobs: blobs, Log: log, CacheDir: filepath.Join(dir, "kernels")})
	if err != nil {
		t.Fatal(err)
	}
	builds := build.New(build.Config{DB: db, Blobs: blobs, Archive: arch, Logger: log})
	return env{db: db, intake: intake.New(intake.Config{Archive: arch, Builds: builds, TempDir: dir}), dir: dir}
}

// hostBTF returns this machine's vmlinux BTF.
func hostBTF(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		testenv.Require(t, "/sys/kernel/btf/vmlinux", "the kernel's own BTF: "+err.Error())
	}
	return raw
}

// succeededBuild records a program whose latest revision built for
// x86_64, so that a new x86_64 kernel gets a relocation queued.
func succeededBuild(t *testing.T, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.AddRevision(ctx, store.RevisionInput{Program: "p", Digest: "rev", Entry: "p.bpf.c", BundleBlob: "b",
		Size: 1, Files: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.EnsureBuild(ctx, store.BuildInput{Program: "p", Revision: "rev", Arch: "x86_64", CacheKey: "k"}); err != nil {
		t.Fatal(err)
	}
	job, err := db.Claim(ctx, store.ClaimOptions{Owner: "test", TTL: time.Minute, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Finish(ctx, job.Lease, store.Outcome{State: api.StateSucceeded, ObjectBlob: "obj", ObjectSize: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestImportFileQueuesRelocations: a kernel imported from a file is
// stored and, in the same call, gets the relocation of every program's
// latest build queued; importing it again changes nothing.
func TestImportFileQueuesRelocations(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	succeededBuild(t, e.db)
	path := filepath.Join(e.dir, "upload-1234")
	if err := os.WriteFile(path, hostBTF(t), 0o600); err != nil {
		t.Fatal(err)
	}
	id, _ := kernel.ParseID("debian/12/x86_64/6.1.0-99-amd64")
	opt := archive.ImportOptions{ID: id, By: "alice"}
	fi, err := e.intake.ImportFile(ctx, path, "vmlinux.btf", opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Kernels) != 1 || len(fi.Refused) != 0 {
		t.Fatalf("import: %+v", fi)
	}
	imp := fi.Kernels[0]
	if imp.Kernel.KID != id.String() || !imp.Created || imp.Queued != 1 || strings.Contains(imp.Kernel.Source, path) ||
		!strings.Contains(imp.Kernel.Source, "vmlinux.btf") {
		t.Fatalf("imported: %+v", imp)
	}
	if n, err := e.db.PendingArtifacts(ctx); err != nil || n != 1 {
		t.Fatalf("pending relocations: %d %v", n, err)
	}
	again, err := e.intake.ImportFile(ctx, path, "vmlinux.btf", opt)
	if err != nil || len(again.Kernels) != 1 || again.Kernels[0].Created || again.Kernels[0].Queued != 0 {
		t.Fatalf("import again: %+v %v", again, err)
	}
}

// TestImportFileRefuses: bad input imports nothing and names the file as
// the caller knows it, never the server's temporary path.
func TestImportFileRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	path := filepath.Join(e.dir, "upload-5678")
	if err := os.WriteFile(path, []byte("not a kernel at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := e.intake.ImportFile(ctx, path, "junk.bin", archive.ImportOptions{})
	var in *archive.InputError
	if !errors.As(err, &in) || strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("junk: %v", err)
	}
	// BTF that names no kernel, and no id given.
	if err := os.WriteFile(path, hostBTF(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.intake.ImportFile(ctx, path, "vmlinux.btf", archive.ImportOptions{}); !errors.As(err, &in) {
		t.Fatalf("no id: %v", err)
	}
	if ks, err := e.db.Kernels(ctx, ""); err != nil || len(ks) != 0 {
		t.Fatalf("kernels after refusals: %v %v", ks, err)
	}
}

// TestImportTree: a btfhub-archive tree imports its good files and lists
// the refused ones; an id, which names one kernel, is refused for it.
func TestImportTree(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	raw := hostBTF(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	// A .btf.tar.xz: an xz'd tar holding RELEASE.btf.
	var inner bytes.Buffer
	xw, err := xz.NewWriter(&inner)
	if err != nil {
		t.Fatal(err)
	}
	itw := tar.NewWriter(xw)
	itw.WriteHeader(&tar.Header{Name: "6.1.0-98-amd64.btf", Mode: 0o644, Size: int64(len(raw)), Typeflag: tar.TypeReg})
	itw.Write(raw)
	itw.Close()
	xw.Close()
	add("debian/12/x86_64/6.1.0-98-amd64.btf.tar.xz", inner.Bytes())
	add("debian/12/x86_64/6.1.0-97-amd64.btf.tar.xz", []byte("broken"))
	tw.Close()
	path := filepath.Join(e.dir, "tree-upload")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := e.intake.ImportFile(ctx, path, "archive.tar", archive.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Kernels) != 1 || fi.Kernels[0].Kernel.KID != "debian/12/x86_64/6.1.0-98-amd64" ||
		len(fi.Refused) != 1 || !strings.Contains(fi.Refused[0].Path, "6.1.0-97-amd64") || strings.Contains(fi.Refused[0].Path, path) {
		t.Fatalf("tree: %+v", fi)
	}
	id, _ := kernel.ParseID("debian/12/x86_64/6.1.0-1-amd64")
	var in *archive.InputError
	if _, err := e.intake.ImportFile(ctx, path, "archive.tar", archive.ImportOptions{ID: id}); !errors.As(err, &in) {
		t.Fatalf("tree with an id: %v", err)
	}
}
