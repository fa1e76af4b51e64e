package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// arMember is one member of an ar archive.
type arMember struct {
	name string
	r    *io.SectionReader
}

// ar archive format: a global header, then members, each with a 60-byte
// header and data padded to an even length.
const (
	arHeaderLen = 60
	arNameLen   = 16
	arSizeOff   = 48
	arSizeLen   = 10
	arMagicOff  = 58
)

// readAr lists the members of the ar archive in r without reading their
// data.
func readAr(r io.ReaderAt, size int64) ([]arMember, error) {
	var members []arMember
	off := int64(len(arMagic))
	for off < size {
		if size-off < arHeaderLen {
			return nil, formatErrorf("truncated ar archive: member header at byte %d needs %d bytes, file has %d", off, arHeaderLen, size-off)
		}
		var hdr [arHeaderLen]byte
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return nil, err
		}
		if hdr[arMagicOff] != '`' || hdr[arMagicOff+1] != '\n' {
			return nil, formatErrorf("invalid ar archive: bad member header at byte %d", off)
		}
		name := strings.TrimSuffix(strings.TrimRight(string(hdr[:arNameLen]), " "), "/")
		n, err := strconv.ParseInt(strings.TrimRight(string(hdr[arSizeOff:arSizeOff+arSizeLen]), " "), 10, 64)
		if err != nil || n < 0 {
			return nil, formatErrorf("invalid ar archive: member %q has size %q", name, hdr[arSizeOff:arSizeOff+arSizeLen])
		}
		data := off + arHeaderLen
		if n > size-data {
			return nil, formatErrorf("truncated ar archive: member %s needs %d bytes at byte %d, file has %d", name, n, data, size-data)
		}
		members = append(members, arMember{name, io.NewSectionReader(r, data, n)})
		off = data + n + n%2
	}
	return members, nil
}

// debPackage is what importDeb needs of a package's control file.
type debPackage struct {
	name, version, arch string
}

// debContents is what importDeb takes from a package's data.tar.
type debContents struct {
	release string // from boot/vmlinuz-RELEASE
	vmlinuz string // temporary copy of boot/vmlinuz-RELEASE
	config  []byte
	modules []debModule
}

type debModule struct {
	release string // lib/modules/RELEASE/...
	Module
}

// importDeb imports a Debian linux-image package.
func importDeb(ctx context.Context, f *os.File, size int64, path string, opts Options, fn func(*Kernel) error) error {
	members, err := readAr(f, size)
	if err != nil {
		return fmt.Errorf("not a Debian package: %w", err)
	}
	if len(members) == 0 || members[0].name != "debian-binary" {
		return formatErrorf("not a Debian package: no debian-binary first in the ar archive")
	}
	var control, data *arMember
	for i := range members {
		m := &members[i]
		switch {
		case strings.HasPrefix(m.name, "control.tar") && control == nil:
			control = m
		case strings.HasPrefix(m.name, "data.tar") && data == nil:
			data = m
		}
	}
	if control == nil || data == nil {
		return formatErrorf("not a Debian package: no control.tar or data.tar member")
	}
	pkg, err := readDebControl(ctx, control)
	if err != nil {
		return fmt.Errorf("%s: %w", control.name, err)
	}
	if !strings.HasPrefix(pkg.name, "linux-image-") {
		return formatErrorf("not a Debian linux-image package: package %s %s", pkg.name, pkg.version)
	}
	arch, err := kernel.NormalizeArch(pkg.arch)
	if err != nil {
		return formatErrorf("package %s: %w", pkg.name, err)
	}

	contents, err := readDebData(ctx, data, opts)
	if contents.vmlinuz != "" {
		defer func() {
			if contents.vmlinuz != "" {
				os.Remove(contents.vmlinuz)
			}
		}()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", data.name, err)
	}
	if contents.vmlinuz == "" {
		return formatErrorf("not a Debian linux-image package: no boot/vmlinuz-* in %s", data.name)
	}
	vmlinuz := "boot/vmlinuz-" + contents.release

	img, how, err := readImageAt(ctx, contents.vmlinuz, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", vmlinuz, err)
	}
	if img.banner != nil && img.banner.Release != contents.release {
		return formatErrorf("%s holds kernel release %s", vmlinuz, img.banner.Release)
	}
	k := &Kernel{
		ID: kernel.ID{
			Distro:  "debian",
			Version: debianVersion(pkg.version, contents.release),
			Arch:    arch,
			Release: contents.release,
		},
		BTF:    img.btf,
		Config: contents.config,
		Source: fmt.Sprintf("deb %s (%s %s; %s: %s)", path, pkg.name, pkg.version, vmlinuz, how),
	}
	img.fill(k)
	for _, m := range contents.modules {
		if m.release != contents.release {
			continue
		}
		raw, _, err := validateBTF(m.BTF, "module "+m.Name, img.spec)
		if err != nil {
			return err
		}
		k.Modules = append(k.Modules, Module{Name: m.Name, BTF: raw})
	}
	slices.SortFunc(k.Modules, func(a, b Module) int { return strings.Compare(a.Name, b.Name) })
	img.spec, contents.modules = nil, nil

	k.Image, contents.vmlinuz = contents.vmlinuz, "" // now callWithImage's
	return callWithImage(k, opts, fn)
}

// readImageAt reads the kernel image file at path.
func readImageAt(ctx context.Context, path string, opts Options) (*kernelImage, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	return readImageFile(ctx, f, fi.Size(), opts)
}

// debVersionSuffix finds the Debian release a package was built for:
// +deb12 in 6.12.117+deb12-cloud-amd64, ~deb12u1 in 6.12.117-1~deb12u1.
var debVersionSuffix = regexp.MustCompile(`[+~]deb(\d+)`)

// debianReleases maps kernel series to the Debian release that ships it.
var debianReleases = map[[2]int]string{
	{3, 16}: "8", {4, 9}: "9", {4, 19}: "10", {5, 10}: "11", {6, 1}: "12", {6, 12}: "13",
}

// debianVersion returns the Debian release a linux-image package belongs
// to: from its version or kernel release (+debN, ~debN), else from the
// kernel series; empty if unknown.
func debianVersion(pkgVersion, release string) string {
	for _, s := range []string{pkgVersion, release} {
		if m := debVersionSuffix.FindStringSubmatch(s); m != nil {
			return m[1]
		}
	}
	if r, err := kernel.ParseRelease(release); err == nil {
		return debianReleases[[2]int{r.Major, r.Minor}]
	}
	return ""
}

// openMember decompresses a member of a Debian package as its name says.
func openMember(m *arMember, r io.Reader) (io.ReadCloser, error) {
	var zr io.Reader
	var err error
	switch ext := path.Ext(m.name); ext {
	case ".tar":
		zr = r
	case ".gz":
		zr, err = gzip.NewReader(r)
	case ".xz":
		zr, err = xz.NewReader(r)
	case ".lzma":
		zr, err = lzma.NewReader(r)
	case ".bz2":
		zr = bzip2.NewReader(r)
	case ".zst":
		d, derr := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if derr != nil {
			return nil, derr
		}
		return d.IOReadCloser(), nil
	default:
		return nil, formatErrorf("unsupported compression %q", ext)
	}
	if err != nil {
		return nil, formatErrorf("corrupt compressed data: %w", err)
	}
	if c, ok := zr.(io.ReadCloser); ok {
		return c, nil
	}
	return io.NopCloser(zr), nil
}

// readDebControl reads the fields of a package's control file.
func readDebControl(ctx context.Context, m *arMember) (*debPackage, error) {
	zr, err := openMember(m, bufio.NewReaderSize(ctxReader{ctx, m.r}, bufSize))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, formatErrorf("no control file")
		}
		if err != nil {
			return nil, formatErrorf("%w", err)
		}
		if path.Clean(hdr.Name) != "control" {
			continue
		}
		b, err := readLimited(tr, maxControlSize, "control file")
		if err != nil {
			return nil, err
		}
		fields := parseControl(b)
		p := &debPackage{name: fields["Package"], version: fields["Version"], arch: fields["Architecture"]}
		if p.name == "" {
			return nil, formatErrorf("control file has no Package field")
		}
		return p, nil
	}
}

// parseControl parses the first paragraph of a Debian control file.
func parseControl(b []byte) map[string]string {
	fields := make(map[string]string)
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' { // continuation
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// moduleFile matches a kernel module in a package: lib/modules/RELEASE/...
var moduleFile = regexp.MustCompile(`^(?:usr/)?lib/modules/([^/]+)/.+/([^/]+)\.ko(\.xz|\.zst|\.gz)?$`)

// readDebData streams a package's data.tar: it copies boot/vmlinuz-* to a
// temporary file and keeps boot/config-* and the BTF of modules. On error,
// the vmlinuz copy, if made, is in the result for the caller to remove.
func readDebData(ctx context.Context, m *arMember, opts Options) (debContents, error) {
	var c debContents
	zr, err := openMember(m, bufio.NewReaderSize(ctxReader{ctx, m.r}, bufSize))
	if err != nil {
		return c, err
	}
	defer zr.Close()
	mr := newModuleReader()
	defer mr.close()
	configs := make(map[string][]byte)
	seen := make(map[string]bool)

	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return c, ctx.Err()
			}
			return c, formatErrorf("%w", err)
		}
		if !hdr.FileInfo().Mode().IsRegular() {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		dir, base := path.Split(name)
		switch {
		case dir == "boot/" && strings.HasPrefix(base, "vmlinuz-"):
			if c.vmlinuz != "" {
				return c, formatErrorf("more than one boot/vmlinuz-*: %s and %s", c.release, base)
			}
			c.release = strings.TrimPrefix(base, "vmlinuz-")
			if c.vmlinuz, err = copyToTemp(ctx, tr, opts.TempDir, "vmlinuz-*", maxCompressedImageSize); err != nil {
				return c, fmt.Errorf("%s: %w", name, err)
			}
		case dir == "boot/" && strings.HasPrefix(base, "config-"):
			if configs[strings.TrimPrefix(base, "config-")], err = readLimited(tr, maxConfigSize, name); err != nil {
				return c, err
			}
		default:
			match := moduleFile.FindStringSubmatch(name)
			if match == nil {
				continue
			}
			modName := strings.ReplaceAll(match[2], "-", "_")
			if seen[match[1]+"/"+modName] {
				continue
			}
			seen[match[1]+"/"+modName] = true
			raw, err := mr.btf(tr, match[3], opts.maxBTF())
			if err != nil {
				return c, fmt.Errorf("%s: %w", name, err)
			}
			if raw != nil {
				c.modules = append(c.modules, debModule{match[1], Module{Name: modName, BTF: raw}})
			}
		}
	}
	c.config = configs[c.release]
	return c, nil
}

// moduleReader reads the BTF of kernel modules, reusing its buffer and
// decoders.
type moduleReader struct {
	in   *bufio.Reader
	buf  bytes.Buffer
	zstd *zstd.Decoder
}

func newModuleReader() *moduleReader {
	return &moduleReader{in: bufio.NewReaderSize(nil, 64<<10)}
}

func (mr *moduleReader) close() {
	if mr.zstd != nil {
		mr.zstd.Close()
	}
}

// btf returns a copy of the .BTF section of the module read from r, which
// is compressed as ext says (".xz", ".zst", ".gz" or ""), or nil if it has
// none.
func (mr *moduleReader) btf(r io.Reader, ext string, maxBTF int64) ([]byte, error) {
	mr.in.Reset(r)
	r = mr.in
	var zr io.Reader
	switch ext {
	case "":
		zr = r
	case ".xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, formatErrorf("corrupt xz: %w", err)
		}
		zr = x
	case ".gz":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, formatErrorf("corrupt gzip: %w", err)
		}
		defer g.Close()
		zr = g
	case ".zst":
		if mr.zstd == nil {
			d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				return nil, err
			}
			mr.zstd = d
		}
		if err := mr.zstd.Reset(r); err != nil {
			return nil, formatErrorf("corrupt zstd: %w", err)
		}
		zr = mr.zstd
	}
	mr.buf.Reset()
	n, err := mr.buf.ReadFrom(io.LimitReader(zr, maxModuleSize+1))
	if err != nil {
		var bf *badFormat
		if errors.As(err, &bf) {
			return nil, err
		}
		return nil, formatErrorf("decompress module: %w", err)
	}
	if n > maxModuleSize {
		return nil, formatErrorf("module is larger than the limit of %d bytes", maxModuleSize)
	}
	f, err := elf.NewFile(bytes.NewReader(mr.buf.Bytes()))
	if err != nil {
		return nil, formatErrorf("invalid module ELF: %w", err)
	}
	sec := f.Section(".BTF")
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil, nil
	}
	if sec.Size > uint64(maxBTF) {
		return nil, formatErrorf(".BTF section of %d bytes exceeds the limit of %d", sec.Size, maxBTF)
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, formatErrorf("read .BTF section: %w", err)
	}
	return raw, nil
}
