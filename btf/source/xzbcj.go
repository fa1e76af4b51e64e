package source

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// x86 kernels are compressed by scripts/xz_wrap.sh with "--x86 --lzma2":
// the xz block's filter chain is the x86 BCJ filter, then LZMA2. The xz
// package decodes LZMA2 alone and refuses such blocks, so openXZ decodes
// that chain itself: the LZMA2 data with package lzma, then BCJ.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	xzCheckCRC32  = 0x01
)

// errNotBCJ means the stream is not a single-block x86 BCJ + LZMA2 xz
// stream: decode it with package xz.
var errNotBCJ = errors.New("not an x86 BCJ xz stream")

// xzBCJHeader parses an xz stream header and its first block header. It
// returns the header lengths, the LZMA2 dictionary size and the check type,
// or errNotBCJ when the filter chain is not BCJ x86 + LZMA2.
func xzBCJHeader(b []byte) (hdrLen int, dict uint32, check byte, err error) {
	if len(b) < 13 || !bytes.HasPrefix(b, xzMagic) || b[6] != 0 {
		return 0, 0, 0, errNotBCJ
	}
	check = b[7] & 0x0f
	bh := b[12:]
	size := (int(bh[0]) + 1) * 4
	if bh[0] == 0 || len(bh) < size {
		return 0, 0, 0, errNotBCJ
	}
	if crc32.ChecksumIEEE(bh[:size-4]) != binary.LittleEndian.Uint32(bh[size-4:size]) {
		return 0, 0, 0, errNotBCJ
	}
	flags := bh[1]
	if flags&0x3c != 0 || flags&0x03 != 1 { // two filters, reserved bits clear
		return 0, 0, 0, errNotBCJ
	}
	p := 2
	varint := func() (uint64, bool) {
		v, n := binary.Uvarint(bh[p : size-4])
		if n <= 0 {
			return 0, false
		}
		p += n
		return v, true
	}
	for _, bit := range []byte{0x40, 0x80} { // compressed, uncompressed size
		if flags&bit != 0 {
			if _, ok := varint(); !ok {
				return 0, 0, 0, errNotBCJ
			}
		}
	}
	id, ok1 := varint()
	props, ok2 := varint()
	if !ok1 || !ok2 || id != xzFilterX86 || props != 0 { // a start offset is not supported
		return 0, 0, 0, errNotBCJ
	}
	id, ok1 = varint()
	props, ok2 = varint()
	if !ok1 || !ok2 || id != xzFilterLZMA2 || props != 1 || p >= size-4 {
		return 0, 0, 0, errNotBCJ
	}
	d := bh[p]
	switch {
	case d > 40:
		return 0, 0, 0, errNotBCJ
	case d == 40:
		dict = 0xffffffff
	default:
		dict = (2 | uint32(d)&1) << (d/2 + 11)
	}
	return 12 + size, dict, check, nil
}

// openXZ opens an xz stream: one holding the x86 BCJ filter (a kernel) is
// decoded here, into memory (at most limit bytes), anything else by open.
func openXZ(r io.Reader, limit int64, open func(io.Reader) (io.ReadCloser, error)) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(12 + 1024)
	hdrLen, dict, check, err := xzBCJHeader(head)
	if errors.Is(err, errNotBCJ) {
		return open(br)
	}
	if _, err := br.Discard(hdrLen); err != nil {
		return nil, err
	}
	if dict > maxLZMADict {
		return nil, fmt.Errorf("xz: LZMA2 dictionary of %d bytes", dict)
	}
	cr := &countingByteReader{r: br}
	zr, err := lzma.Reader2Config{DictCap: max(int(dict), lzma.MinDictCap)}.NewReader2(cr)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("xz: more than %d bytes", limit)
	}
	bcjX86(out)
	if check == xzCheckCRC32 {
		// The block (header and data) is padded to 4 bytes, then its check.
		if _, err := br.Discard(int((4 - (int64(hdrLen-12)+cr.n)%4) % 4)); err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		var sum [4]byte
		if _, err := io.ReadFull(br, sum[:]); err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		if binary.LittleEndian.Uint32(sum[:]) != crc32.ChecksumIEEE(out) {
			return nil, errors.New("xz: CRC32 mismatch after the x86 BCJ filter")
		}
	}
	return io.NopCloser(bytes.NewReader(out)), nil
}

// bcjX86 undoes the x86 BCJ filter on buf, a whole stream decoded from its
// start: the filter turned the relative targets of CALL (E8) and JMP (E9)
// into absolute ones. This is xz's simple_x86 decoder.
func bcjX86(buf []byte) {
	maskToAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskToBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	testMSByte := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskToBitNum[prevMask])]
				if !maskToAllowed[prevMask] || testMSByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !testMSByte(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - uint32(i+5)
			if prevMask == 0 {
				break
			}
			j := maskToBitNum[prevMask] * 8
			if !testMSByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}

// countingByteReader counts the bytes read through it.
type countingByteReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingByteReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingByteReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
