package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Host describes the running machine: its ID from /etc/os-release (or
// /usr/lib/os-release) and uname, and whether its kernel exposes BTF.
func Host() (HostInfo, error) {
	var osRelease []byte
	var err error
	for _, p := range osReleasePaths {
		osRelease, err = os.ReadFile(p)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return HostInfo{}, fmt.Errorf("host: %w", err)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return HostInfo{}, fmt.Errorf("host: uname: %w", err)
	}
	h, err := HostFrom(osRelease, Utsname{
		Release: unix.ByteSliceToString(u.Release[:]),
		Version: unix.ByteSliceToString(u.Version[:]),
		Machine: unix.ByteSliceToString(u.Machine[:]),
	})
	if err != nil {
		return HostInfo{}, err
	}
	if fi, err := os.Stat(VmlinuxBTF); err == nil && fi.Mode().IsRegular() {
		h.HasBTF, h.BTFPath = true, VmlinuxBTF
	}
	return h, nil
}
