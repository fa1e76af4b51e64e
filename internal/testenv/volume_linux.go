package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Volume is a small file system of its own (a tmpfs) for a test: the
// test fills it to see what happens when a disk is full, then frees it.
type Volume struct {
	// Dir is where the volume is mounted.
	Dir string
	t   testing.TB
}

// SmallVolume mounts a tmpfs of size bytes at a new temporary directory,
// unmounted when the test ends. It needs root (CAP_SYS_ADMIN); without it
// the test is skipped, or fails if Strict.
func SmallVolume(t testing.TB, size int64) *Volume {
	t.Helper()
	dir := t.TempDir()
	opts := fmt.Sprintf("size=%d,mode=0755", size)
	if err := syscall.Mount("bpfarm-test", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		Require(t, "a tmpfs mount", fmt.Sprintf("mount -t tmpfs -o %s: %v (needs root)", opts, err))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return &Volume{Dir: dir, t: t}
}

// fillerName is the file Fill writes and Free removes.
const fillerName = ".filler"

// Fill writes a file that takes all the volume's free space: afterwards
// writes to the volume fail with ENOSPC.
func (v *Volume) Fill() {
	v.t.Helper()
	f, err := os.OpenFile(filepath.Join(v.Dir, fillerName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		v.t.Fatalf("fill volume: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			v.t.Fatalf("fill volume: %v", err)
		}
	}
	// The last partial block, byte by byte.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	if free := v.Free(); free != 0 {
		v.t.Fatalf("fill volume: %d bytes still free", free)
	}
}

// FillLeaving fills the volume, then frees n bytes (rounded down to whole
// blocks): small writes still succeed, large ones fail with ENOSPC.
func (v *Volume) FillLeaving(n int64) {
	v.t.Helper()
	v.Fill()
	name := filepath.Join(v.Dir, fillerName)
	fi, err := os.Stat(name)
	if err != nil {
		v.t.Fatalf("fill volume: %v", err)
	}
	if err := os.Truncate(name, max(0, fi.Size()-n)); err != nil {
		v.t.Fatalf("fill volume: %v", err)
	}
}

// Release removes what Fill wrote: the volume has its space back.
func (v *Volume) Release() {
	v.t.Helper()
	if err := os.Remove(filepath.Join(v.Dir, fillerName)); err != nil {
		v.t.Fatalf("release volume: %v", err)
	}
}

// Free returns the bytes free on the volume.
func (v *Volume) Free() int64 {
	v.t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(v.Dir, &st); err != nil {
		v.t.Fatalf("statfs %s: %v", v.Dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
