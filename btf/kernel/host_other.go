//go:build !linux

package kernel

import (
	"fmt"
	"runtime"
)

// Host describes the running machine. It is only supported on Linux.
func Host() (HostInfo, error) {
	return HostInfo{}, fmt.Errorf("host: not supported on %s", runtime.GOOS)
}
