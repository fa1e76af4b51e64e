package source

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/cilium/ebpf/btf"
)

// importVmlinux imports an ELF vmlinux.
func importVmlinux(ctx context.Context, f *os.File, path string, opts Options, fn func(*Kernel) error) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	img, err := readKernelImage(ctx, f, fi.Size(), opts)
	if err != nil {
		return err
	}
	k := &Kernel{BTF: img.btf, Source: "vmlinux ELF " + path}
	img.fill(k)
	return fn(k)
}

// kernelImage is what was read from a decompressed kernel: its BTF and its
// banner, if found.
type kernelImage struct {
	btf    []byte
	spec   *btf.Spec
	banner *kernel.Banner
	arch   string // from the ELF machine or the arm64 Image header
}

// fill sets k's ID.Arch, ID.Release, Build and Banner from the image.
func (img *kernelImage) fill(k *Kernel) {
	if k.ID.Arch == "" {
		k.ID.Arch = img.arch
	}
	if img.banner == nil {
		return
	}
	k.Banner = img.banner
	k.Build = img.banner.Build
	if k.ID.Release == "" {
		k.ID.Release = img.banner.Release
	}
}

// readKernelImage reads the BTF and banner of a decompressed kernel: an
// ELF vmlinux, whose .BTF section holds the BTF, or a raw image (arm64
// Image), where the BTF is found by its header.
func readKernelImage(ctx context.Context, r io.ReaderAt, size int64, opts Options) (*kernelImage, error) {
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil {
		return nil, formatErrorf("kernel image of %d bytes is too short", size)
	}
	img := new(kernelImage)
	bannerFrom := io.NewSectionReader(r, 0, size)
	if bytes.Equal(magic[:], elfMagic) {
		f, err := elf.NewFile(r)
		if err != nil {
			return nil, formatErrorf("invalid ELF: %w", err)
		}
		if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
			return nil, formatErrorf("ELF of type %s is not a vmlinux", f.Type)
		}
		switch f.Machine {
		case elf.EM_X86_64:
			img.arch = kernel.ArchX86_64
		case elf.EM_AARCH64:
			img.arch = kernel.ArchARM64
		}
		sec := f.Section(".BTF")
		if sec == nil {
			return nil, formatErrorf("ELF has no .BTF section (kernel built without CONFIG_DEBUG_INFO_BTF?)")
		}
		if sec.Type == elf.SHT_NOBITS {
			return nil, formatErrorf("ELF .BTF section has no data (NOBITS)")
		}
		if sec.Size > uint64(opts.maxBTF()) {
			return nil, formatErrorf(".BTF section of %d bytes exceeds the limit of %d", sec.Size, opts.maxBTF())
		}
		if sec.Offset+sec.Size > uint64(size) {
			return nil, formatErrorf("truncated ELF: .BTF section ends at byte %d, file has %d bytes", sec.Offset+sec.Size, size)
		}
		raw, err := sec.Data()
		if err != nil {
			return nil, formatErrorf("read .BTF section: %w", err)
		}
		img.btf, img.spec, err = validateBTF(raw, ".BTF section", nil)
		if err != nil {
			return nil, err
		}
		if ro := f.Section(".rodata"); ro != nil && ro.Type != elf.SHT_NOBITS && ro.Offset+ro.Size <= uint64(size) {
			bannerFrom = io.NewSectionReader(r, int64(ro.Offset), int64(ro.Size))
		}
	} else {
		if isARM64Image(r) {
			img.arch = kernel.ArchARM64
		}
		var err error
		img.btf, img.spec, err = findBTFBlob(r, size, opts.maxBTF())
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := findBanner(bannerFrom, bannerFrom.Size())
	if err != nil {
		return nil, err
	}
	img.banner = b
	return img, nil
}

// maxBannerLen bounds the length of a linux_banner.
const maxBannerLen = 1024

// buildNumber starts a build string with a build number: "#1 SMP ...".
var buildNumber = regexp.MustCompile(`^#\d`)

// findBanner finds the kernel's linux_banner in r. An image may hold more
// than one: besides the one in use (from init/version-timestamp.c, "#1
// SMP ..."), the one it replaced at the final link ("# SMP ..."). It
// prefers a banner with a build number; it returns nil if none is found.
func findBanner(r io.ReaderAt, size int64) (*kernel.Banner, error) {
	var first, best *kernel.Banner
	err := scan(r, size, [][]byte{[]byte(kernel.BannerPrefix)}, func(_ int, off int64) (bool, error) {
		buf := make([]byte, min(maxBannerLen, size-off))
		n, err := r.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return false, err
		}
		buf = buf[:n]
		end := bytes.IndexAny(buf, "\x00\n")
		if end < 0 {
			return true, nil
		}
		b, err := kernel.ParseBanner(string(buf[:end]))
		if err != nil {
			return true, nil
		}
		if first == nil {
			first = &b
		}
		if buildNumber.MatchString(b.Build) {
			best = &b
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("find banner: %w", err)
	}
	if best == nil {
		best = first
	}
	return best, nil
}
