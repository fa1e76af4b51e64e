package compile

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bpfarm/bpfarm/bpfsrc/headerset"
)

// headerTree is one directory of system headers copied into the farm tree.
type headerTree struct {
	src string // host directory to copy
	dst string // destination, relative to the farm root
}

// libbpfTree are libbpf's headers as libbpf-dev installs them.
var libbpfTree = headerTree{src: "/usr/include/bpf", dst: "libbpf/bpf"}

// farmHeader is <bpfarm.h>, the farm's own header (BPFARM_RECORD).
//
//go:embed farm/bpfarm.h
var farmHeader []byte

// farmSrc is where PrepareHeaders writes the farm's own headers before
// copying them into the tree beside libbpf's (so that <bpfarm.h> resolves).
const farmSrc = "farm-src"

// uapiTrees are the kernel UAPI headers per target architecture.
var uapiTrees = map[string][]headerTree{
	"x86_64": {
		{src: "/usr/include/linux", dst: "uapi/x86_64/linux"},
		{src: "/usr/include/asm-generic", dst: "uapi/x86_64/asm-generic"},
		{src: "/usr/include/x86_64-linux-gnu/asm", dst: "uapi/x86_64/asm"},
	},
	// From linux-libc-dev-arm64-cross.
	"arm64": {
		{src: "/usr/aarch64-linux-gnu/include/linux", dst: "uapi/arm64/linux"},
		{src: "/usr/aarch64-linux-gnu/include/asm-generic", dst: "uapi/arm64/asm-generic"},
		{src: "/usr/aarch64-linux-gnu/include/asm", dst: "uapi/arm64/asm"},
	},
}

// Headers is the farm's include tree: libbpf's headers and the kernel UAPI
// headers of every supported target architecture, copied from the host so
// that the sandbox can bind them read-only.
type Headers struct {
	dir     string
	uapi    map[string]string // arch → directory holding linux/, asm/, asm-generic/
	missing map[string]string // arch → why it is not supported
	digests map[string]string // arch → digest of libbpf + uapi/<arch>
	uapiDig map[string]string // arch → digest of uapi/<arch>
	builtin *headerset.Set    // the host's libbpf headers as a header set
}

// LibbpfSet is a libbpf header set as a compile uses it: Dir holds bpf/*.h
// (bound where the farm's libbpf headers are), Digest is the set's
// headerset digest.
type LibbpfSet struct {
	Dir, Digest string
}

// PrepareHeaders builds the farm include tree under dir, or reuses the one
// already there if it is up to date:
//
//	dir/libbpf/bpf/...             libbpf's headers (for <bpf/bpf_helpers.h>)
//	dir/libbpf/bpfarm.h            the farm's own header (for <bpfarm.h>)
//	dir/uapi/<arch>/linux/...      kernel UAPI headers
//	dir/uapi/<arch>/asm-generic/...
//	dir/uapi/<arch>/asm/...
//
// Files are copied, not linked. An architecture whose headers are not
// installed on the host is left out; compiling for it fails with a clear
// error. libbpf's headers are required.
func PrepareHeaders(dir string) (*Headers, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("prepare headers: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("prepare headers: %w", err)
	}

	h := &Headers{
		dir:     dir,
		uapi:    make(map[string]string),
		missing: make(map[string]string),
		digests: make(map[string]string),
		uapiDig: make(map[string]string),
	}

	src := filepath.Join(dir, farmSrc)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, fmt.Errorf("prepare headers: %w", err)
	}
	if old, err := os.ReadFile(filepath.Join(src, "bpfarm.h")); err != nil || !bytes.Equal(old, farmHeader) {
		if err := writeFileAtomic(filepath.Join(src, "bpfarm.h"), farmHeader); err != nil {
			return nil, fmt.Errorf("prepare headers: bpfarm.h: %w", err)
		}
	}
	libbpf, err := syncTrees(dir, "libbpf", []headerTree{libbpfTree, {src: src, dst: "libbpf"}})
	if err != nil {
		return nil, fmt.Errorf("prepare headers: libbpf (is libbpf-dev installed?): %w", err)
	}
	files, err := headerset.ReadDir(libbpfTree.src)
	if err == nil {
		h.builtin, err = headerset.New(files)
	}
	if err != nil {
		return nil, fmt.Errorf("prepare headers: libbpf (is libbpf-dev installed?): %w", err)
	}

	for arch, trees := range uapiTrees {
		if _, err := os.Stat(trees[0].src); errors.Is(err, fs.ErrNotExist) {
			h.missing[arch] = fmt.Sprintf("no %s kernel UAPI headers on the farm (%s is missing)", arch, trees[0].src)
			continue
		}
		d, err := syncTrees(dir, filepath.Join("uapi", arch), trees)
		if err != nil {
			return nil, fmt.Errorf("prepare headers: %s UAPI: %w", arch, err)
		}
		h.uapi[arch] = filepath.Join(dir, "uapi", arch)
		h.uapiDig[arch] = d
		sum := sha256.New()
		fmt.Fprintf(sum, "libbpf %s\nuapi %s\n", libbpf, d)
		h.digests[arch] = hex.EncodeToString(sum.Sum(nil))
	}
	return h, nil
}

// Dir returns the root of the farm include tree.
func (h *Headers) Dir() string { return h.dir }

// Arches returns the target architectures the farm has headers for, sorted.
func (h *Headers) Arches() []string {
	var arches []string
	for arch := range h.uapi {
		arches = append(arches, arch)
	}
	sort.Strings(arches)
	return arches
}

// Digest returns the digest of the headers used when compiling for arch:
// libbpf's headers and arch's UAPI headers.
func (h *Headers) Digest(arch string) (string, error) {
	if err := checkArch(arch); err != nil {
		return "", err
	}
	d, ok := h.digests[arch]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrUnsupportedArch, h.missing[arch])
	}
	return d, nil
}

// DigestWith returns the digest of the headers used when compiling for arch
// with the libbpf header set set; nil is the built-in set (Digest).
func (h *Headers) DigestWith(arch string, set *LibbpfSet) (string, error) {
	d, err := h.Digest(arch)
	if err != nil || set == nil {
		return d, err
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "libbpf-set %s\nuapi %s\n", set.Digest, h.uapiDig[arch])
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// Builtin returns the built-in libbpf header set: the host's libbpf-dev
// headers (/usr/include/bpf), as read when the Headers were prepared.
func (h *Headers) Builtin() *headerset.Set { return h.builtin }

func (h *Headers) libbpfDir() string { return filepath.Join(h.dir, "libbpf") }

// InstalledSet returns the set with digest if InstallSet installed it
// before.
func (h *Headers) InstalledSet(digest string) (*LibbpfSet, bool) {
	if len(digest) != 64 || strings.Trim(digest, "0123456789abcdef") != "" {
		return nil, false
	}
	dir := filepath.Join(h.dir, "sets", digest)
	if _, err := os.Stat(filepath.Join(dir, "bpf", headerset.Required)); err != nil {
		return nil, false
	}
	if ensureFarmHeader(dir) != nil {
		return nil, false
	}
	return &LibbpfSet{Dir: dir, Digest: digest}, true
}

// ensureFarmHeader puts the farm's <bpfarm.h> beside a header set's bpf/
// (sets installed before it existed lack it).
func ensureFarmHeader(dir string) error {
	p := filepath.Join(dir, "bpfarm.h")
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, farmHeader) {
		return nil
	}
	return writeFileAtomic(p, farmHeader)
}

// InstallSet makes set available to compiles: its headers are written once
// under the farm tree, by digest, and reused after.
func (h *Headers) InstallSet(set *headerset.Set) (*LibbpfSet, error) {
	dir := filepath.Join(h.dir, "sets", set.Digest)
	if _, err := os.Stat(filepath.Join(dir, "bpf", headerset.Required)); err == nil {
		if err := ensureFarmHeader(dir); err != nil {
			return nil, fmt.Errorf("install header set: %w", err)
		}
		return &LibbpfSet{Dir: dir, Digest: set.Digest}, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("install header set: %w", err)
	}
	staging, err := os.MkdirTemp(filepath.Dir(dir), ".staging-")
	if err != nil {
		return nil, fmt.Errorf("install header set: %w", err)
	}
	defer os.RemoveAll(staging)
	if err := set.Install(staging); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(staging, "bpfarm.h"), farmHeader); err != nil {
		return nil, fmt.Errorf("install header set: %w", err)
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return nil, fmt.Errorf("install header set: %w", err)
	}
	// Another compile may have installed the same set meanwhile: then
	// the rename fails and its copy, with the same content, is used.
	if err := os.Rename(staging, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "bpf", headerset.Required)); serr != nil {
			return nil, fmt.Errorf("install header set: %w", err)
		}
	}
	return &LibbpfSet{Dir: dir, Digest: set.Digest}, nil
}

func (h *Headers) uapiDir(arch string) (string, error) {
	if err := checkArch(arch); err != nil {
		return "", err
	}
	d, ok := h.uapi[arch]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrUnsupportedArch, h.missing[arch])
	}
	return d, nil
}

// syncTrees makes root/name hold a copy of trees, unless a copy of the same
// content is already there, and returns the content's digest.
//
// The digest is computed from the sources; a stamp file next to the copy
// records the digest it was made from.
func syncTrees(root, name string, trees []headerTree) (string, error) {
	var files []treeFile
	for _, t := range trees {
		tf, err := listTree(t.src)
		if err != nil {
			return "", err
		}
		rel, err := filepath.Rel(name, t.dst)
		if err != nil {
			return "", err
		}
		for i := range tf {
			tf[i].rel = filepath.ToSlash(filepath.Join(rel, tf[i].rel))
		}
		files = append(files, tf...)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })

	sum := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(sum, "%s\x00%d\x00", f.rel, len(data))
		sum.Write(data)
	}
	digest := hex.EncodeToString(sum.Sum(nil))

	dst := filepath.Join(root, name)
	stamp := dst + ".digest"
	if old, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(old)) == digest {
		if _, err := os.Stat(dst); err == nil {
			return digest, nil
		}
	}

	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	staging, err := os.MkdirTemp(filepath.Dir(dst), ".staging-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	for _, f := range files {
		if err := copyFile(f.src, filepath.Join(staging, filepath.FromSlash(f.rel))); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return "", err
	}

	// Swap the new copy in; a compile still using the old one keeps its
	// bind mount of it.
	old := staging + ".old"
	if err := os.Rename(dst, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.Rename(staging, dst); err != nil {
		return "", err
	}
	os.RemoveAll(old)
	if err := writeFileAtomic(stamp, []byte(digest+"\n")); err != nil {
		return "", err
	}
	return digest, nil
}

type treeFile struct {
	src string // host path
	rel string // slash-separated path relative to the tree's destination
}

// listTree lists the regular files under dir, following symbolic links to
// files.
func listTree(dir string) ([]treeFile, error) {
	var files []treeFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, treeFile{src: p, rel: filepath.ToSlash(rel)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no headers in %s", dir)
	}
	return files, nil
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so that readers see either nothing or all of it.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
