//go:build !linux

package decode

import (
	"errors"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// ErrNoBTF is returned (wrapped) by MapTypes for a map created without BTF
// for its key and value.
var ErrNoBTF = errors.New("the map has no BTF for its key and value")

// MapTypes returns the BTF types of a loaded map's key and value; BPF maps
// exist on Linux only.
func MapTypes(m *ebpf.Map) (key, value btf.Type, err error) {
	return nil, nil, errors.New("BPF maps need Linux")
}
