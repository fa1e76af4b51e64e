package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/ulikunitz/xz"
)

// BTFHubSuffix ends the name of a btfhub-archive file.
const BTFHubSuffix = ".btf.tar.xz"

// importTree imports every DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz in a
// btfhub-archive tree, in lexical order. The ID comes from the path: the
// file and its three parent directories, so that dir may also be a
// subtree such as archive/ubuntu; the arch directory may use an alias
// (aarch64, amd64), stored in its canonical form. The path names the
// kernel even where the file's entry names another release.
//
// A file it refuses does not stop the import: it is reported to
// opts.Refused, the import goes on with the next file, and at the end a
// *TreeError lists every refused file.
func importTree(ctx context.Context, dir string, opts Options, fn func(*Kernel) error) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	found := 0
	var refused []*FormatError
	refuse := func(fe *FormatError) {
		refused = append(refused, fe)
		if opts.Refused != nil {
			opts.Refused(fe)
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), BTFHubSuffix) {
			return nil
		}
		found++
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		id, err := TreeID(filepath.Join(abs, rel))
		if err != nil {
			refuse(&FormatError{Path: p, Err: err})
			return nil
		}
		if !d.Type().IsRegular() {
			refuse(&FormatError{Path: p, Err: errors.New("not a regular file")})
			return nil
		}
		k, err := readBTFHubFile(ctx, p, opts)
		if fe := (*FormatError)(nil); errors.As(err, &fe) {
			refuse(fe)
			return nil
		}
		if err != nil {
			return err
		}
		k.ID = id
		k.Source = "btfhub archive " + dir
		return fn(k)
	})
	if err != nil {
		return err
	}
	if found == 0 {
		return formatErrorf("directory has no DISTRO/VERSION/ARCH/RELEASE%s files (not a btfhub-archive tree)", BTFHubSuffix)
	}
	if len(refused) > 0 {
		return &TreeError{Dir: dir, Files: found, Refused: refused}
	}
	return nil
}

// importPackedTree imports a btfhub-archive tree packed in a tar archive
// (what an upload of a tree is): every DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz
// entry, in the archive's order, going on past refused entries as
// importTree does. Each entry goes through a temporary file.
func importPackedTree(ctx context.Context, r io.Reader, name string, opts Options, fn func(*Kernel) error) error {
	tr := tar.NewReader(bufio.NewReaderSize(ctxReader{ctx, r}, bufSize))
	found := 0
	var refused []*FormatError
	refuse := func(fe *FormatError) {
		refused = append(refused, fe)
		if opts.Refused != nil {
			opts.Refused(fe)
		}
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return tarError(ctx, err, "tar archive of a btfhub-archive tree")
		}
		entry := path.Clean(strings.TrimPrefix(hdr.Name, "/"))
		if !strings.HasSuffix(entry, BTFHubSuffix) || hdr.Typeflag == tar.TypeDir {
			continue
		}
		found++
		where := name + ":" + entry
		id, err := TreeID(entry)
		if err != nil {
			refuse(&FormatError{Path: where, Err: err})
			continue
		}
		if !hdr.FileInfo().Mode().IsRegular() {
			refuse(&FormatError{Path: where, Err: errors.New("not a regular file")})
			continue
		}
		if hdr.Size > opts.maxBTF() {
			refuse(&FormatError{Path: where, Err: fmt.Errorf("%d bytes exceed the limit of %d", hdr.Size, opts.maxBTF())})
			continue
		}
		k, err := readPackedEntry(ctx, tr, opts)
		if bf := (*badFormat)(nil); errors.As(err, &bf) {
			refuse(&FormatError{Path: where, Err: err})
			continue
		}
		if err != nil {
			return err
		}
		k.ID = id
		k.Source = "btfhub archive " + name
		if err := fn(k); err != nil {
			return err
		}
	}
	if found == 0 {
		return formatErrorf("tar archive has no DISTRO/VERSION/ARCH/RELEASE%s entries (not a btfhub-archive tree)", BTFHubSuffix)
	}
	if len(refused) > 0 {
		return &TreeError{Dir: name, Files: found, Refused: refused}
	}
	return nil
}

// readPackedEntry reads one .btf.tar.xz entry of a packed tree through a
// temporary file.
func readPackedEntry(ctx context.Context, r io.Reader, opts Options) (*Kernel, error) {
	tmp, err := os.CreateTemp(opts.TempDir, "btfhub-entry-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, r); err != nil {
		return nil, tarError(ctx, err, "tar archive of a btfhub-archive tree")
	}
	return readBTFTarXZ(ctx, tmp, opts)
}

// TreeID returns the kernel ID that a btfhub-archive tree gives the file
// at path: its last four elements, DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz,
// in canonical form (an aarch64 directory holds arm64 kernels).
func TreeID(path string) (kernel.ID, error) {
	parts := strings.Split(filepath.ToSlash(path), "/")
	if len(parts) < 4 {
		return kernel.ID{}, errors.New("not at DISTRO/VERSION/ARCH/RELEASE" + BTFHubSuffix)
	}
	parts = parts[len(parts)-4:]
	id := kernel.ID{
		Distro:  parts[0],
		Version: parts[1],
		Arch:    parts[2],
		Release: strings.TrimSuffix(parts[3], BTFHubSuffix),
	}.Canonical()
	if err := id.Validate(); err != nil {
		return kernel.ID{}, fmt.Errorf("path is not DISTRO/VERSION/ARCH/RELEASE%s: %w", BTFHubSuffix, err)
	}
	return id, nil
}

// TreeError reports the files of a btfhub-archive tree that Import
// refused. Every other file of the tree was imported.
type TreeError struct {
	// Dir is the tree.
	Dir string
	// Files counts the tree's DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz files.
	Files int
	// Refused holds one FormatError per refused file, naming it.
	Refused []*FormatError
}

// Error returns one line: how many files were refused and the first.
func (e *TreeError) Error() string {
	more := ""
	if len(e.Refused) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(e.Refused)-1)
	}
	return fmt.Sprintf("import %s: refused %d of %d files: %s%s", e.Dir, len(e.Refused), e.Files, e.Refused[0].Error(), more)
}

// Unwrap returns the refusals.
func (e *TreeError) Unwrap() []error {
	out := make([]error, len(e.Refused))
	for i, fe := range e.Refused {
		out[i] = fe
	}
	return out
}

// readBTFHubFile reads one btfhub-archive file, returning a FormatError
// naming it if it is broken.
func readBTFHubFile(ctx context.Context, p string, opts Options) (*Kernel, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k, err := readBTFTarXZ(ctx, f, opts)
	if bf := (*badFormat)(nil); errors.As(err, &bf) {
		return nil, &FormatError{Path: p, Err: err}
	}
	return k, err
}

// xzHead returns the first 512 bytes of the xz-compressed r (fewer if it
// holds less).
func xzHead(r io.ReaderAt) ([]byte, error) {
	zr, err := xz.NewReader(bufio.NewReaderSize(io.NewSectionReader(r, 0, 1<<62), 64<<10))
	if err != nil {
		return nil, fmt.Errorf("corrupt xz: %w", err)
	}
	block := make([]byte, 512)
	n, err := io.ReadFull(zr, block)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("corrupt xz: %w", err)
	}
	return block[:n], nil
}

// isTarHeader reports whether block starts a tar archive.
func isTarHeader(block []byte) bool {
	if len(block) < 512 {
		return false
	}
	_, err := tar.NewReader(io.MultiReader(bytes.NewReader(block), bytes.NewReader(make([]byte, 1024)))).Next()
	return err == nil
}

// readBTFTarXZ reads a btfhub-archive file: an xz-compressed tar holding
// one entry RELEASE.btf of raw BTF. An entry named otherwise is read all
// the same, with the release left empty.
func readBTFTarXZ(ctx context.Context, r io.ReaderAt, opts Options) (*Kernel, error) {
	zr, err := xz.NewReader(bufio.NewReaderSize(ctxReader{ctx, io.NewSectionReader(r, 0, 1<<62)}, bufSize))
	if err != nil {
		return nil, formatErrorf("corrupt xz: %w", err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return nil, tarError(ctx, err, "not a tar archive")
	}
	name := path.Clean(hdr.Name)
	if !hdr.FileInfo().Mode().IsRegular() || strings.Contains(name, "/") {
		return nil, formatErrorf("entry %s is not a file RELEASE.btf", hdr.Name)
	}
	// The entry's name gives the release when it is RELEASE.btf, as in
	// btfhub-archive; archives in the wild name it otherwise (vmlinux.btf),
	// and then the caller names the kernel (a tree's path, --id).
	release, _ := strings.CutSuffix(name, ".btf")
	if _, err := kernel.ParseRelease(release); err != nil {
		release = ""
	}
	if hdr.Size > opts.maxBTF() {
		return nil, formatErrorf("entry %s: BTF of %d bytes exceeds the limit of %d", hdr.Name, hdr.Size, opts.maxBTF())
	}
	raw, err := io.ReadAll(tr)
	if err != nil {
		return nil, tarError(ctx, err, "entry "+name+": corrupt xz data")
	}
	switch next, err := tr.Next(); {
	case err == nil:
		return nil, formatErrorf("more than one entry: %s and %s", hdr.Name, next.Name)
	case err != io.EOF:
		return nil, tarError(ctx, err, "after entry "+name)
	}
	raw, _, err = validateBTF(raw, name, nil)
	if err != nil {
		return nil, err
	}
	return &Kernel{ID: kernel.ID{Release: release}, BTF: raw}, nil
}

// tarError describes an error reading a compressed tar: the context's
// error if it is done, else a format error.
func tarError(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == io.ErrUnexpectedEOF {
		return formatErrorf("%s: truncated", what)
	}
	return formatErrorf("%s: %w", what, err)
}
