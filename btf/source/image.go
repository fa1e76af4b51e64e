package source

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// codec is a compression format that kernel images use.
type codec struct {
	name  string
	magic []byte
	// check tells whether the header at the start of b (at least
	// codecHeaderLen bytes when the input has them) is plausible, to skip
	// false matches of the magic early.
	check func(b []byte) bool
	open  func(r io.Reader) (io.ReadCloser, error)
}

// codecHeaderLen is how many bytes of a candidate payload checks see.
const codecHeaderLen = 16

// maxLZMADict bounds the dictionary of an lzma payload: the kernel
// compresses with lzma -9, whose dictionary is 64 MiB.
const maxLZMADict = 64 << 20

// codecs are the formats of kernel images, as in the kernel's
// scripts/Makefile.lib and lib/decompress.c, except lzo, for which there is
// no decompressor here.
var codecs = []*codec{
	{
		name:  "gzip",
		magic: []byte{0x1f, 0x8b, 0x08},
		check: func(b []byte) bool { return len(b) > 3 && b[3]&0xe0 == 0 }, // reserved flags
		open: func(r io.Reader) (io.ReadCloser, error) {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			zr.Multistream(false) // a size or padding may follow
			return zr, nil
		},
	},
	{
		name:  "xz",
		magic: xzMagic,
		open: func(r io.Reader) (io.ReadCloser, error) {
			return openXZ(r, MaxImageSize, func(r io.Reader) (io.ReadCloser, error) {
				zr, err := xz.ReaderConfig{SingleStream: true}.NewReader(r)
				if err != nil {
					return nil, err
				}
				return io.NopCloser(zr), nil
			})
		},
	},
	{
		name:  "lzma",
		magic: []byte{0x5d, 0x00, 0x00},
		check: func(b []byte) bool {
			if len(b) < 13 {
				return false
			}
			// The dictionary size of lzma(1) is 2^n or 2^n+2^(n-1); the
			// size is unknown (-1) or plausible.
			dict := binary.LittleEndian.Uint32(b[1:])
			size := binary.LittleEndian.Uint64(b[5:])
			d := dict >> bits.TrailingZeros32(dict|1<<31)
			return dict >= 1<<16 && dict <= maxLZMADict && (d == 1 || d == 3) &&
				(size == ^uint64(0) || size <= MaxImageSize)
		},
		open: func(r io.Reader) (io.ReadCloser, error) {
			zr, err := lzma.ReaderConfig{DictCap: maxLZMADict}.NewReader(r)
			if err != nil {
				return nil, err
			}
			return io.NopCloser(zr), nil
		},
	},
	{
		name:  "lz4",
		magic: []byte{0x02, 0x21, 0x4c, 0x18}, // legacy frame, as the kernel makes it
		open: func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(lz4.NewReader(r)), nil
		},
	},
	{
		name:  "zstd",
		magic: []byte{0x28, 0xb5, 0x2f, 0xfd},
		open: func(r io.Reader) (io.ReadCloser, error) {
			zr, err := zstd.NewReader(r,
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxMemory(MaxImageSize))
			if err != nil {
				return nil, err
			}
			return zr.IOReadCloser(), nil
		},
	},
	{
		name:  "bzip2",
		magic: []byte("BZh"),
		check: func(b []byte) bool {
			return len(b) >= 10 && '1' <= b[3] && b[3] <= '9' &&
				bytes.Equal(b[4:10], []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}) // block magic
		},
		open: func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(bzip2.NewReader(r)), nil
		},
	},
}

// codecAt returns the codec whose magic and header match b, or nil.
func codecAt(b []byte) *codec {
	for _, c := range codecs {
		if bytes.HasPrefix(b, c.magic) && (c.check == nil || c.check(b)) {
			return c
		}
	}
	return nil
}

// codecByName returns the codec named name, or nil. EFI zboot images name
// xz "xzkern".
func codecByName(name string) *codec {
	if name == "xzkern" {
		name = "xz"
	}
	for _, c := range codecs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Kernel image headers.
const (
	// x86 boot protocol (Documentation/arch/x86/boot.rst).
	bzSetupSectsOff   = 0x1f1
	bzHeaderMagicOff  = 0x202
	bzVersionOff      = 0x206
	bzPayloadOff      = 0x248
	bzPayloadLenOff   = 0x24c
	bzMinVersion      = 0x208 // first with payload_offset
	arm64MagicOff     = 0x38
	zbootPayloadOff   = 8
	zbootPayloadLen   = 12
	zbootCompTypeOff  = 24
	zbootCompTypeSize = 32
)

var (
	bzHeaderMagic = []byte("HdrS")
	arm64Magic    = []byte("ARM\x64")
	zbootMagic    = []byte("zimg")
)

// isBzImage reports whether head starts an x86 bzImage.
func isBzImage(head []byte) bool {
	return len(head) > bzPayloadLenOff+4 && bytes.Equal(head[bzHeaderMagicOff:bzHeaderMagicOff+4], bzHeaderMagic)
}

// isZboot reports whether head starts an EFI zboot image (arm64 vmlinuz
// with CONFIG_EFI_ZBOOT).
func isZboot(head []byte) bool {
	return len(head) >= zbootCompTypeOff+zbootCompTypeSize && bytes.HasPrefix(head, []byte("MZ")) && bytes.Equal(head[4:8], zbootMagic)
}

// isARM64Image reports whether r is an arm64 Image (not compressed).
func isARM64Image(r io.ReaderAt) bool {
	var b [4]byte
	_, err := r.ReadAt(b[:], arm64MagicOff)
	return err == nil && bytes.Equal(b[:], arm64Magic)
}

// isKernelImage reports whether head starts a kernel image: an x86
// bzImage, an EFI zboot image, an arm64 Image or compressed data of a
// format that kernels use.
func isKernelImage(head []byte) bool {
	return isBzImage(head) || isZboot(head) ||
		len(head) >= arm64MagicOff+4 && bytes.Equal(head[arm64MagicOff:arm64MagicOff+4], arm64Magic) ||
		codecAt(head) != nil
}

// importImage imports a kernel image file: a bzImage, an EFI zboot image,
// an arm64 Image, or a compressed kernel.
func importImage(ctx context.Context, f *os.File, size int64, path string, opts Options, fn func(*Kernel) error) error {
	img, how, err := readImageFile(ctx, f, size, opts)
	if err != nil {
		return err
	}
	k := &Kernel{BTF: img.btf, Source: fmt.Sprintf("kernel image %s (%s)", path, how)}
	img.fill(k)
	img.spec = nil
	if k.Image, err = copyToTemp(ctx, io.NewSectionReader(f, 0, size), opts.TempDir, "vmlinuz-*", maxCompressedImageSize); err != nil {
		return err
	}
	return callWithImage(k, opts, fn)
}

// readImageFile reads a kernel image: decompressed if it is compressed,
// else as it is. It tells how the kernel was found.
func readImageFile(ctx context.Context, r io.ReaderAt, size int64, opts Options) (*kernelImage, string, error) {
	if isARM64Image(r) {
		img, err := readKernelImage(ctx, r, size, opts)
		return img, "arm64 Image", err
	}
	return decompressImage(ctx, r, size, opts)
}

// payload is a candidate compressed kernel inside an image file.
type payload struct {
	codec *codec
	off   int64
	size  int64  // bytes from off that may belong to it
	from  string // what told where it is
}

// maxCandidates bounds how many candidate payloads decompressImage tries.
const maxCandidates = 256

// payloads returns the candidate compressed kernels in r: the one the
// image's header declares, if any, then every match of a codec's magic, in
// order of position.
func payloads(r io.ReaderAt, size int64) ([]payload, error) {
	head := make([]byte, min(size, sniffLen))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, err
	}
	var out []payload
	add := func(p payload) {
		if p.off < 0 || p.off >= size || p.size <= 0 {
			return
		}
		p.size = min(p.size, size-p.off)
		for _, q := range out {
			if q.off == p.off {
				return
			}
		}
		if p.codec == nil {
			hdr := make([]byte, min(codecHeaderLen, p.size))
			if _, err := r.ReadAt(hdr, p.off); err != nil && err != io.EOF {
				return
			}
			if p.codec = codecAt(hdr); p.codec == nil {
				return
			}
		}
		out = append(out, p)
	}

	switch {
	case isBzImage(head):
		setupSects := int64(head[bzSetupSectsOff])
		if setupSects == 0 {
			setupSects = 4
		}
		if binary.LittleEndian.Uint16(head[bzVersionOff:]) >= bzMinVersion {
			off := int64(binary.LittleEndian.Uint32(head[bzPayloadOff:]))
			n := int64(binary.LittleEndian.Uint32(head[bzPayloadLenOff:]))
			add(payload{off: (setupSects+1)*512 + off, size: n, from: "bzImage header"})
		}
	case isZboot(head):
		off := int64(binary.LittleEndian.Uint32(head[zbootPayloadOff:]))
		n := int64(binary.LittleEndian.Uint32(head[zbootPayloadLen:]))
		name := string(head[zbootCompTypeOff : zbootCompTypeOff+zbootCompTypeSize])
		name, _, _ = strings.Cut(name, "\x00")
		if c := codecByName(name); c != nil {
			add(payload{codec: c, off: off, size: n, from: "EFI zboot header"})
		}
	}

	var magics [][]byte
	for _, c := range codecs {
		magics = append(magics, c.magic)
	}
	err := scan(r, size, magics, func(_ int, off int64) (bool, error) {
		add(payload{off: off, size: size - off, from: "magic"})
		return len(out) < maxCandidates, nil
	})
	return out, err
}

// errNotKernel rejects a payload whose decompressed start is not a kernel.
var errNotKernel = errors.New("decompressed data is not a kernel (neither ELF nor arm64 Image)")

// errTooLarge rejects a payload whose decompressed size is too large.
var errTooLarge = fmt.Errorf("decompressed kernel exceeds %d bytes", MaxImageSize)

// decompressImage finds the compressed kernel in an image file by trying
// each candidate payload in turn: it decompresses it into a temporary file
// and accepts the first that is a kernel with BTF. It tells which format
// it found where.
func decompressImage(ctx context.Context, r io.ReaderAt, size int64, opts Options) (*kernelImage, string, error) {
	cands, err := payloads(r, size)
	if err != nil {
		return nil, "", err
	}
	if len(cands) == 0 {
		return nil, "", formatErrorf("no compressed kernel found (no %s data)", codecNames())
	}
	var lastErr error
	for _, p := range cands {
		img, err := tryPayload(ctx, r, p, opts)
		if err == nil {
			return img, fmt.Sprintf("%s at offset %d, from the %s", p.codec.name, p.off, p.from), nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if errors.Is(err, errNotKernel) && lastErr != nil {
			continue // keep the more telling error
		}
		var bf *badFormat
		if !errors.As(err, &bf) && !errors.Is(err, errNotKernel) {
			return nil, "", err // I/O error
		}
		lastErr = fmt.Errorf("%s at offset %d: %w", p.codec.name, p.off, err)
	}
	return nil, "", formatErrorf("no kernel with BTF found in %d candidate compressed payload(s); last: %w", len(cands), lastErr)
}

func codecNames() string {
	var names []string
	for _, c := range codecs {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// tryPayload decompresses p into a temporary file and reads the kernel in
// it. A decompression error after a complete kernel (e.g. on the size that
// the kernel's build appends) is ignored.
func tryPayload(ctx context.Context, r io.ReaderAt, p payload, opts Options) (*kernelImage, error) {
	zr, err := p.codec.open(ctxReader{ctx, bufio.NewReaderSize(io.NewSectionReader(r, p.off, p.size), bufSize)})
	if err != nil {
		return nil, &badFormat{err}
	}
	defer zr.Close()

	tmp, err := os.CreateTemp(opts.TempDir, "vmlinux-*")
	if err != nil {
		return nil, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	w := &kernelWriter{w: bufio.NewWriterSize(tmp, bufSize), max: MaxImageSize}
	_, copyErr := io.Copy(w, zr)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if errors.Is(copyErr, errNotKernel) || errors.Is(copyErr, errTooLarge) {
		return nil, &badFormat{copyErr}
	}
	if err := w.flush(); err != nil {
		if errors.Is(err, errNotKernel) {
			return nil, &badFormat{err}
		}
		return nil, err
	}
	img, err := readKernelImage(ctx, tmp, w.n, opts)
	if err != nil && copyErr != nil {
		return nil, &badFormat{fmt.Errorf("decompress: %w", copyErr)}
	}
	return img, err
}

// kernelWriter writes a decompressed kernel, failing early if its start is
// not that of a kernel or if it grows larger than max.
type kernelWriter struct {
	w    *bufio.Writer
	n    int64
	max  int64
	head []byte // the first bytes, until checked
	ok   bool
}

// kernelHeadLen is how much of a kernel's start kernelWriter checks.
const kernelHeadLen = arm64MagicOff + 4

func (w *kernelWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.max {
		return 0, errTooLarge
	}
	if !w.ok {
		need := kernelHeadLen - len(w.head)
		w.head = append(w.head, p[:min(need, len(p))]...)
		if len(w.head) == kernelHeadLen {
			if !looksLikeKernel(w.head) {
				return 0, errNotKernel
			}
			w.ok = true
		}
	}
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}

// flush writes out what is buffered, failing if less than the start of a
// kernel was written.
func (w *kernelWriter) flush() error {
	if !w.ok {
		return errNotKernel
	}
	return w.w.Flush()
}

// looksLikeKernel reports whether head starts an ELF vmlinux or an arm64
// Image.
func looksLikeKernel(head []byte) bool {
	return bytes.HasPrefix(head, elfMagic) ||
		len(head) >= arm64MagicOff+4 && bytes.Equal(head[arm64MagicOff:arm64MagicOff+4], arm64Magic)
}

// copyToTemp copies r into a new temporary file in dir, named by pattern
// as os.CreateTemp does, and returns its path. It fails if r holds more
// than max bytes.
func copyToTemp(ctx context.Context, r io.Reader, dir, pattern string, max int64) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, max+1))
	if err == nil && n > max {
		err = formatErrorf("kernel image is larger than the limit of %d bytes", max)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
