package verify

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
)

// ErrNoVersion is returned by ImageRelease for images whose header names
// no kernel version (anything but an x86 bzImage).
var ErrNoVersion = errors.New("the image header names no kernel version")

// Offsets of the x86 boot protocol's setup header (Documentation/arch/x86/boot.rst).
const (
	bzHeaderMagicOff   = 0x202 // "HdrS"
	bzVersionOff       = 0x206 // boot protocol version
	bzKernelVersionOff = 0x20e // pointer to the version string, minus 0x200
)

// ImageRelease reads the kernel release from an x86 bzImage's setup
// header, the string "uname -r" prints, without decompressing the kernel.
// Other images give ErrNoVersion.
func ImageRelease(r io.ReaderAt) (string, error) {
	head := make([]byte, 0x4000)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	head = head[:n]
	if len(head) < 0x210 || !bytes.Equal(head[bzHeaderMagicOff:bzHeaderMagicOff+4], []byte("HdrS")) ||
		binary.LittleEndian.Uint16(head[bzVersionOff:]) < 0x200 {
		return "", ErrNoVersion
	}
	ptr := int64(binary.LittleEndian.Uint16(head[bzKernelVersionOff:]))
	if ptr == 0 {
		return "", ErrNoVersion
	}
	buf := make([]byte, 256)
	n, err = r.ReadAt(buf, ptr+0x200)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	s, _, _ := strings.Cut(string(buf[:n]), "\x00")
	release, _, _ := strings.Cut(s, " ")
	if release == "" {
		return "", ErrNoVersion
	}
	return release, nil
}
