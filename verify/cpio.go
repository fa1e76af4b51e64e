package verify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// File modes of cpio entries (as in stat(2)).
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChr  = 0o020000
	modeLink = 0o120000
)

// CPIOWriter writes a cpio archive in the "newc" format (the SVR4 portable
// format without checksums, magic 070701), which the kernel unpacks as an
// initramfs. Parent directories must be written before their entries.
type CPIOWriter struct {
	w      *bufio.Writer
	ino    uint32
	closed bool
}

// NewCPIOWriter returns a writer to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: bufio.NewWriterSize(w, 64<<10), ino: 1}
}

// CPIOEntry is one entry's header.
type CPIOEntry struct {
	Name  string // path without a leading "/", e.g. "bpfarm/job.json"
	Mode  uint32 // type and permission bits, e.g. modeReg|0o755
	Size  int64  // regular files and symlinks
	Major uint32 // character and block devices
	Minor uint32
	MTime int64
}

func (c *CPIOWriter) header(e CPIOEntry) error {
	if c.closed {
		return errors.New("cpio: write after close")
	}
	name := strings.TrimPrefix(e.Name, "/")
	if name == "" || strings.Contains(name, "\x00") {
		return fmt.Errorf("cpio: bad name %q", e.Name)
	}
	if e.Size < 0 || e.Size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d out of range", name, e.Size)
	}
	nlink := uint32(1)
	if e.Mode&0o170000 == modeDir {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	_, err := fmt.Fprintf(c.w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.Mode, 0, 0, nlink, uint32(e.MTime), uint32(e.Size), 0, 0, e.Major, e.Minor, len(name)+1, 0)
	if err != nil {
		return err
	}
	c.w.WriteString(name)
	c.w.WriteByte(0)
	return c.pad(110 + len(name) + 1)
}

// pad writes zeros up to the next multiple of 4 after n bytes.
func (c *CPIOWriter) pad(n int) error {
	if r := n % 4; r != 0 {
		_, err := c.w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// Dir adds a directory.
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	return c.header(CPIOEntry{Name: name, Mode: modeDir | perm&0o7777})
}

// File adds a regular file with data.
func (c *CPIOWriter) File(name string, perm uint32, data []byte) error {
	if err := c.header(CPIOEntry{Name: name, Mode: modeReg | perm&0o7777, Size: int64(len(data))}); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	return c.pad(len(data))
}

// FileFrom adds a regular file of size bytes read from r.
func (c *CPIOWriter) FileFrom(name string, perm uint32, size int64, r io.Reader) error {
	if err := c.header(CPIOEntry{Name: name, Mode: modeReg | perm&0o7777, Size: size}); err != nil {
		return err
	}
	n, err := io.CopyN(c.w, r, size)
	if err != nil {
		return fmt.Errorf("cpio: %s: %d of %d bytes: %w", name, n, size, err)
	}
	return c.pad(int(size % 4))
}

// CharDev adds a character device node.
func (c *CPIOWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.header(CPIOEntry{Name: name, Mode: modeChr | perm&0o7777, Major: major, Minor: minor})
}

// Symlink adds a symbolic link to target.
func (c *CPIOWriter) Symlink(name, target string) error {
	if err := c.header(CPIOEntry{Name: name, Mode: modeLink | 0o777, Size: int64(len(target))}); err != nil {
		return err
	}
	c.w.WriteString(target)
	return c.pad(len(target))
}

// Close writes the trailer and flushes; it does not close the underlying
// writer.
func (c *CPIOWriter) Close() error {
	if c.closed {
		return nil
	}
	if err := c.header(CPIOEntry{Name: "TRAILER!!!"}); err != nil {
		return err
	}
	c.closed = true
	return c.w.Flush()
}
