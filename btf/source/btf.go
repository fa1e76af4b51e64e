package source

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cilium/ebpf/btf"
)

// btfHeaderLen is the length of the BTF header (struct btf_header).
const btfHeaderLen = 24

// btfHeader is struct btf_header, with the optional layout section that
// newer kernels may append to it.
type btfHeader struct {
	order              binary.ByteOrder
	version, flags     uint8
	hdrLen             uint32
	typeOff, typeLen   uint32
	strOff, strLen     uint32
	layoutOff, layoutL uint32
}

// parseBTFHeader parses the header at the start of b.
func parseBTFHeader(b []byte) (btfHeader, error) {
	if len(b) < btfHeaderLen {
		return btfHeader{}, fmt.Errorf("header needs %d bytes, have %d", btfHeaderLen, len(b))
	}
	var h btfHeader
	switch {
	case b[0] == 0x9f && b[1] == 0xeb:
		h.order = binary.LittleEndian
	case b[0] == 0xeb && b[1] == 0x9f:
		h.order = binary.BigEndian
	default:
		return btfHeader{}, fmt.Errorf("no BTF magic (starts with % x)", b[:2])
	}
	h.version, h.flags = b[2], b[3]
	u32 := func(off int) uint32 { return h.order.Uint32(b[off:]) }
	h.hdrLen, h.typeOff, h.typeLen, h.strOff, h.strLen = u32(4), u32(8), u32(12), u32(16), u32(20)
	if h.version != 1 {
		return btfHeader{}, fmt.Errorf("unsupported BTF version %d", h.version)
	}
	if h.hdrLen < btfHeaderLen {
		return btfHeader{}, fmt.Errorf("header length %d is less than %d", h.hdrLen, btfHeaderLen)
	}
	if h.hdrLen >= btfHeaderLen+8 {
		if len(b) < btfHeaderLen+8 {
			return btfHeader{}, fmt.Errorf("header needs %d bytes, have %d", h.hdrLen, len(b))
		}
		h.layoutOff, h.layoutL = u32(24), u32(28)
	}
	return h, nil
}

// sections returns the end of each section, counted from the start of the
// BTF, in the order types, strings, layout.
func (h btfHeader) sections() []struct {
	name string
	end  uint64
} {
	end := func(off, n uint32) uint64 { return uint64(h.hdrLen) + uint64(off) + uint64(n) }
	return []struct {
		name string
		end  uint64
	}{
		{"header", uint64(h.hdrLen)},
		{"type section", end(h.typeOff, h.typeLen)},
		{"string section", end(h.strOff, h.strLen)},
		{"layout section", end(h.layoutOff, h.layoutL)},
	}
}

// size returns the length of the BTF: the end of its last section.
func (h btfHeader) size() uint64 {
	var n uint64
	for _, s := range h.sections() {
		n = max(n, s.end)
	}
	return n
}

// validateBTF checks raw BTF and parses it, on base if base is not nil
// (split BTF). name names the BTF in errors, e.g. "6.1.0-50.btf" or
// "module ext4"; it may be empty. It returns raw without any bytes after
// the BTF's last section, and the parsed spec. Without a base, the BTF
// must be a kernel's: it must define struct task_struct.
func validateBTF(raw []byte, name string, base *btf.Spec) ([]byte, *btf.Spec, error) {
	in := ""
	if name != "" {
		in = " in " + name
	}
	h, err := parseBTFHeader(raw)
	if err != nil {
		if len(raw) < btfHeaderLen {
			return nil, nil, formatErrorf("truncated BTF%s: %w", in, err)
		}
		return nil, nil, formatErrorf("invalid BTF%s: %w", in, err)
	}
	for _, s := range h.sections() {
		if s.end > uint64(len(raw)) {
			return nil, nil, formatErrorf("truncated BTF%s: %s ends at byte %d, data has %d bytes", in, s.name, s.end, len(raw))
		}
	}
	raw = raw[:h.size()]

	var spec *btf.Spec
	if base == nil {
		spec, err = btf.LoadSpecFromReader(bytes.NewReader(raw))
	} else {
		spec, err = btf.LoadSplitSpecFromReader(bytes.NewReader(raw), base)
	}
	if err != nil {
		return nil, nil, formatErrorf("invalid BTF%s: %w", in, err)
	}
	if base == nil {
		if err := hasTaskStruct(spec); err != nil {
			return nil, nil, formatErrorf("BTF%s %w", in, err)
		}
	}
	return raw, spec, nil
}

// hasTaskStruct checks that spec defines struct task_struct, once or more:
// the BTF of old kernels (4.18, 4.19, as btfhub-archive has it) holds
// duplicate definitions that pahole left, e.g. two identical struct
// task_struct, which libbpf and bpftool accept, and so does the archive.
func hasTaskStruct(spec *btf.Spec) error {
	types, err := spec.AnyTypesByName("task_struct")
	if err != nil && !errors.Is(err, btf.ErrNotFound) {
		return fmt.Errorf("is invalid: task_struct: %w", err)
	}
	for _, t := range types {
		if _, ok := t.(*btf.Struct); ok {
			return nil
		}
	}
	return errors.New("has no struct task_struct: not a kernel's BTF")
}

// btfBlobPatterns start raw BTF with a 24-byte header, as the kernel
// embeds it in an image that is not ELF (arm64 Image): magic 0xeB9F,
// version 1, flags 0, hdr_len 24.
var btfBlobPatterns = [][]byte{
	{0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00},
	{0xeb, 0x9f, 0x01, 0x00, 0x00, 0x00, 0x00, 0x18},
}

// findBTFBlob finds raw vmlinux BTF in r, a kernel image that is not ELF,
// by its header. Of the candidates that validate, it returns the first.
func findBTFBlob(r io.ReaderAt, size, maxBTF int64) ([]byte, *btf.Spec, error) {
	var lastErr error
	var found []byte
	var spec *btf.Spec
	err := scan(r, size, btfBlobPatterns, func(_ int, off int64) (bool, error) {
		var hdr [btfHeaderLen]byte
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return true, nil
		}
		h, err := parseBTFHeader(hdr[:])
		if err != nil {
			return true, nil
		}
		n := h.size()
		if n > uint64(maxBTF) || n > uint64(size-off) || h.typeLen == 0 || h.strLen == 0 {
			return true, nil
		}
		raw := make([]byte, n)
		if _, err := r.ReadAt(raw, off); err != nil {
			return false, err
		}
		raw, s, err := validateBTF(raw, fmt.Sprintf("image at offset %d", off), nil)
		if err != nil {
			lastErr = err
			return true, nil
		}
		found, spec = raw, s
		return false, nil
	})
	if err != nil {
		return nil, nil, err
	}
	if found == nil {
		if lastErr != nil {
			return nil, nil, lastErr
		}
		return nil, nil, formatErrorf("no BTF in the kernel image (built without CONFIG_DEBUG_INFO_BTF?)")
	}
	return found, spec, nil
}

// scanChunk is how much scan reads at a time.
const scanChunk = 1 << 20

// scan calls fn with the index of the pattern and the offset of every
// occurrence of any of pats in the first size bytes of r, in order of
// offset, until fn returns false or an error.
func scan(r io.ReaderAt, size int64, pats [][]byte, fn func(pat int, off int64) (bool, error)) error {
	maxLen := 0
	for _, p := range pats {
		maxLen = max(maxLen, len(p))
	}
	buf := make([]byte, scanChunk+maxLen-1)
	type hit struct {
		pat int
		off int64
	}
	var hits []hit
	for base := int64(0); base < size; base += scanChunk {
		n := int(min(int64(len(buf)), size-base))
		if _, err := r.ReadAt(buf[:n], base); err != nil && err != io.EOF {
			return err
		}
		hits = hits[:0]
		for i, p := range pats {
			for from := 0; ; {
				j := bytes.Index(buf[from:n], p)
				if j < 0 {
					break
				}
				at := from + j
				if at >= scanChunk { // found again in the next chunk
					break
				}
				hits = append(hits, hit{i, base + int64(at)})
				from = at + 1
			}
		}
		slices.SortFunc(hits, func(a, b hit) int { return cmp.Compare(a.off, b.off) })
		for _, h := range hits {
			more, err := fn(h.pat, h.off)
			if err != nil || !more {
				return err
			}
		}
	}
	return nil
}
