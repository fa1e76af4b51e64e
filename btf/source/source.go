// Package source imports kernels' BTF from where it can be found: a
// btfhub-archive tree or one of its .btf.tar.xz files, raw BTF, a vmlinux
// ELF (stripped or not), a compressed kernel image (vmlinuz, bzImage,
// arm64 Image), a Debian linux-image package, or the running host.
//
// The format of an input is told by its content, not its name. Every BTF
// is validated before it is handed over: a kernel whose BTF, or whose
// modules' split BTF, does not parse is refused with a FormatError.
//
// Large inputs are streamed: importing a Debian package of tens of
// megabytes holds the kernel's BTF and its modules' BTF in memory, not the
// package or the decompressed kernel, which go through temporary files.
package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bpfarm/bpfarm/btf/kernel"
)

// Kernel is one kernel's BTF read from some source.
type Kernel struct {
	// ID names the kernel. Parts unknown to the source are empty; the
	// caller may fill them (e.g. from a --id flag).
	ID kernel.ID
	// Build is the build string (uname -v) when known, e.g. from the
	// banner in the kernel image.
	Build string
	// Banner is the kernel's linux_banner when found.
	Banner *kernel.Banner
	// BTF is the raw vmlinux BTF, validated: it parses with
	// btf.LoadSpecFromReader and defines struct task_struct.
	BTF []byte
	// Modules holds the split BTF of the kernel's modules that have BTF,
	// sorted by name, each validated with BTF as its base.
	Modules []Module
	// Config is the kernel's .config (boot/config-RELEASE) when known.
	Config []byte
	// Image is the path of a temporary file holding the compressed kernel
	// image (vmlinuz) when the source had one, else empty. Unless
	// Options.KeepImage is set, Import removes the file when the callback
	// returns; with KeepImage, the caller removes it.
	Image string
	// Source describes where the kernel came from, e.g. "btfhub archive
	// DIR", "deb linux-image-...deb", "vmlinux ELF PATH", "raw BTF PATH",
	// "host".
	Source string
}

// Module is the split BTF of one kernel module.
type Module struct {
	// Name is the module's name as the kernel knows it (in
	// /sys/kernel/btf), e.g. nf_tables or dm_mod.
	Name string
	// BTF is the module's raw split BTF.
	BTF []byte
}

// Options tunes Import.
type Options struct {
	// TempDir is where temporary files go; empty means os.TempDir().
	TempDir string
	// KeepImage leaves Kernel.Image for the caller to remove instead of
	// removing it when the callback returns.
	KeepImage bool
	// MaxBTFSize bounds the size of a kernel's BTF and of a module's BTF;
	// zero or negative means DefaultMaxBTFSize.
	MaxBTFSize int64
	// Refused, if set, is called for each file of a btfhub-archive tree
	// that Import refuses, as it goes; the import goes on with the next
	// file either way, and Import returns a *TreeError listing them.
	Refused func(*FormatError)
}

// Limits of what Import reads.
const (
	// DefaultMaxBTFSize is the default of Options.MaxBTFSize.
	DefaultMaxBTFSize = 256 << 20
	// MaxImageSize bounds a decompressed kernel image.
	MaxImageSize = 512 << 20
	// maxModuleSize bounds a decompressed kernel module.
	maxModuleSize = 256 << 20
	// maxConfigSize bounds a kernel .config.
	maxConfigSize = 16 << 20
	// maxControlSize bounds a Debian package's control file.
	maxControlSize = 1 << 20
	// maxCompressedImageSize bounds a compressed kernel image.
	maxCompressedImageSize = 256 << 20
)

func (o Options) maxBTF() int64 {
	if o.MaxBTFSize <= 0 {
		return DefaultMaxBTFSize
	}
	return o.MaxBTFSize
}

// FormatError reports that an input is not in a format Import reads, or is
// broken. Its message is one line, e.g.
//
//	import x.deb: not a Debian linux-image package: no boot/vmlinuz-* in data.tar.xz
type FormatError struct {
	// Path is the input.
	Path string
	// Err says what the input is not, or what is wrong with it.
	Err error
}

// Error returns "import PATH: WHAT IS WRONG", on one line.
func (e *FormatError) Error() string {
	return "import " + e.Path + ": " + oneLine(e.Err.Error())
}

// Unwrap returns Err.
func (e *FormatError) Unwrap() error { return e.Err }

// oneLine replaces line breaks, so that an error message is one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(s)), " ")
}

// badFormat marks an error as a format error of the input being imported;
// Import turns it into a FormatError naming the input.
type badFormat struct{ err error }

func (e *badFormat) Error() string { return e.err.Error() }
func (e *badFormat) Unwrap() error { return e.err }

// formatErrorf returns a format error of the input being imported.
func formatErrorf(format string, args ...any) error {
	return &badFormat{fmt.Errorf(format, args...)}
}

// callbackError carries the error returned by Import's callback, so that
// Import returns it as it is.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// Import reads every kernel at path and calls fn for each, one at a time:
// a btfhub-archive tree yields many kernels, other inputs one. If fn
// returns an error, Import stops and returns it.
//
// The format is told by content, not name:
//   - a directory is a btfhub-archive tree: every
//     DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz in it, with the ID from the
//     path; a file it refuses is skipped and the others imported, and a
//     *TreeError names the refused ones;
//   - an xz-compressed tar with one entry of raw BTF is a btfhub-archive
//     file; ID.Release is taken from the entry's name when it is
//     RELEASE.btf;
//   - raw BTF (magic 0xeB9F, either byte order);
//   - an ELF file is a vmlinux, stripped or not: its .BTF section, and
//     the release and build from the banner in .rodata;
//   - an ar archive is a Debian linux-image package: the kernel, its
//     config and its modules' BTF;
//   - a compressed kernel image: an x86 bzImage, an EFI zboot image, a
//     compressed or plain arm64 Image;
//   - a tar archive is a packed btfhub-archive tree (tar cf - -C ROOT .):
//     every DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz entry in it, as for a
//     directory.
//
// Inputs that are none of these, or that are broken, give a *FormatError
// and fn is not called for them.
func Import(ctx context.Context, path string, opts Options, fn func(*Kernel) error) error {
	err := importPath(ctx, path, opts, func(k *Kernel) error {
		if err := fn(k); err != nil {
			return &callbackError{err}
		}
		return nil
	})
	if err == nil {
		return nil
	}
	if ce := (*callbackError)(nil); errors.As(err, &ce) {
		return ce.err
	}
	if te := (*TreeError)(nil); errors.As(err, &te) {
		return te // names every refused file of a tree
	}
	if fe := (*FormatError)(nil); errors.As(err, &fe) {
		return fe // names a file in a tree
	}
	if bf := (*badFormat)(nil); errors.As(err, &bf) {
		return &FormatError{Path: path, Err: err}
	}
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		return fmt.Errorf("import %s: %w", path, ctxErr)
	}
	if pe := (*os.PathError)(nil); errors.As(err, &pe) && pe.Path == path {
		return err // already names the input
	}
	return fmt.Errorf("import %s: %w", path, err)
}

// bufSize is the size of the buffers between files and decompressors.
const bufSize = 1 << 20

// sniffLen is how much of a file is read to tell its format: enough for
// the bzImage setup header.
const sniffLen = 4096

// Magic numbers.
var (
	arMagic    = []byte("!<arch>\n")
	elfMagic   = []byte("\x7fELF")
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	btfMagicLE = []byte{0x9f, 0xeb}
	btfMagicBE = []byte{0xeb, 0x9f}
)

func importPath(ctx context.Context, path string, opts Options, fn func(*Kernel) error) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return importTree(ctx, path, opts, fn)
	}
	if !fi.Mode().IsRegular() {
		return formatErrorf("not a regular file or directory (%s)", fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return err
	}
	head = head[:n]
	size := fi.Size()

	switch {
	case n == 0:
		return formatErrorf("empty file")
	case bytes.HasPrefix(head, btfMagicLE), bytes.HasPrefix(head, btfMagicBE):
		return importRawBTF(f, size, path, opts, fn)
	case bytes.HasPrefix(head, elfMagic):
		return importVmlinux(ctx, f, path, opts, fn)
	case bytes.HasPrefix(head, arMagic):
		return importDeb(ctx, f, size, path, opts, fn)
	case bytes.HasPrefix(head, xzMagic):
		block, err := xzHead(f)
		switch {
		case err != nil:
			return formatErrorf("not a btfhub %s: %w", BTFHubSuffix, err)
		case isTarHeader(block):
			k, err := readBTFTarXZ(ctx, f, opts)
			if err != nil {
				return err
			}
			k.Source = "btfhub file " + path
			return fn(k)
		case looksLikeKernel(block):
			return importImage(ctx, f, size, path, opts, fn)
		}
		return formatErrorf("not a btfhub %s: the xz data is not a tar archive (nor a kernel)", BTFHubSuffix)
	case isKernelImage(head):
		return importImage(ctx, f, size, path, opts, fn)
	case isTarHeader(head):
		return importPackedTree(ctx, io.NewSectionReader(f, 0, size), path, opts, fn)
	}
	return formatErrorf("unrecognized content (starts with % x): not BTF, an ELF vmlinux, a Debian package, a .btf.tar.xz or a kernel image", head[:min(n, 8)])
}

// importRawBTF imports a file of raw BTF.
func importRawBTF(f *os.File, size int64, path string, opts Options, fn func(*Kernel) error) error {
	if size > opts.maxBTF() {
		return formatErrorf("BTF of %d bytes exceeds the limit of %d", size, opts.maxBTF())
	}
	raw := make([]byte, size)
	if _, err := f.ReadAt(raw, 0); err != nil {
		return err
	}
	raw, _, err := validateBTF(raw, "", nil)
	if err != nil {
		return err
	}
	return fn(&Kernel{BTF: raw, Source: "raw BTF " + path})
}

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// readLimited reads all of r, failing if it holds more than max bytes;
// what names the data in the error.
func readLimited(r io.Reader, max int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, formatErrorf("%s is larger than the limit of %d bytes", what, max)
	}
	return b, nil
}

// callWithImage calls fn with k, whose Image is a temporary file, and
// removes the file afterwards unless opts.KeepImage.
func callWithImage(k *Kernel, opts Options, fn func(*Kernel) error) error {
	if k.Image != "" && !opts.KeepImage {
		defer os.Remove(k.Image)
	}
	return fn(k)
}
