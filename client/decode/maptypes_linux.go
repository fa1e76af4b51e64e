//go:build linux

package decode

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// ErrNoBTF is returned (wrapped) by MapTypes for a map created without BTF
// for its key and value.
var ErrNoBTF = errors.New("the map has no BTF for its key and value")

// mapInfo is the head of the kernel's struct bpf_map_info, up to the BTF
// ids (UAPI: stable).
type mapInfo struct {
	Type, ID, KeySize, ValueSize, MaxEntries, MapFlags uint32
	Name                                               [16]byte
	Ifindex, BTFVmlinuxValueTypeID                     uint32
	NetnsDev, NetnsIno                                 uint64
	BTFID, BTFKeyTypeID, BTFValueTypeID, BTFVmlinuxID  uint32
	MapExtra                                           uint64
}

// MapTypes returns the BTF types of a loaded map's key and value, as the
// kernel keeps them with the map (the object's BTF, loaded with it): it
// needs no object file, so that a map found by its pin can be decoded. A
// map without BTF gives ErrNoBTF; key is nil for maps whose key has no BTF
// type (such as ring buffers).
func MapTypes(m *ebpf.Map) (key, value btf.Type, err error) {
	var info mapInfo
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{fd: uint32(m.FD()), infoLen: uint32(unsafe.Sizeof(info)), info: uint64(uintptr(unsafe.Pointer(&info)))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return nil, nil, fmt.Errorf("map info: %w", errno)
	}
	if info.BTFID == 0 || info.BTFValueTypeID == 0 {
		return nil, nil, ErrNoBTF
	}
	h, err := btf.NewHandleFromID(btf.ID(info.BTFID))
	if err != nil {
		return nil, nil, fmt.Errorf("map BTF %d: %w", info.BTFID, err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("map BTF %d: %w", info.BTFID, err)
	}
	if info.BTFKeyTypeID != 0 {
		if key, err = spec.TypeByID(btf.TypeID(info.BTFKeyTypeID)); err != nil {
			return nil, nil, fmt.Errorf("map BTF %d: key type: %w", info.BTFID, err)
		}
	}
	if value, err = spec.TypeByID(btf.TypeID(info.BTFValueTypeID)); err != nil {
		return nil, nil, fmt.Errorf("map BTF %d: value type: %w", info.BTFID, err)
	}
	return key, value, nil
}
