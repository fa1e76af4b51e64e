package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// This file reads just enough of the raw BTF and .BTF.ext wire formats for
// what cilium/ebpf does not export: the CO-RE relocation records with their
// positions in the ELF sections, the location of the .BTF.ext header field
// that Relocate zeroes, and the names of "flavoured" kernel types (names with
// a ___suffix), which CO-RE treats as candidates for the unsuffixed name.

const btfMagic = 0xeB9F

// rawBTFHeader is struct btf_header.
type rawBTFHeader struct {
	Magic   uint16
	Version uint8
	Flags   uint8
	HdrLen  uint32
	TypeOff uint32
	TypeLen uint32
	StrOff  uint32
	StrLen  uint32
}

// parseBTFHeader returns the header, the type section and the string section
// of raw BTF. The byte order is guessed from the magic, as libbpf does.
func parseBTFHeader(raw []byte) (rawBTFHeader, binary.ByteOrder, []byte, []byte, error) {
	var hdr rawBTFHeader
	if len(raw) < binary.Size(hdr) {
		return hdr, nil, nil, nil, errors.New("BTF header: short buffer")
	}
	var bo binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint16(raw) == btfMagic:
		bo = binary.LittleEndian
	case binary.BigEndian.Uint16(raw) == btfMagic:
		bo = binary.BigEndian
	default:
		return hdr, nil, nil, nil, fmt.Errorf("BTF header: bad magic %#x", binary.LittleEndian.Uint16(raw))
	}
	if err := binary.Read(bytes.NewReader(raw), bo, &hdr); err != nil {
		return hdr, nil, nil, nil, fmt.Errorf("BTF header: %w", err)
	}
	body := uint64(len(raw)) - uint64(min(hdr.HdrLen, uint32(len(raw))))
	if uint64(hdr.HdrLen) > uint64(len(raw)) ||
		uint64(hdr.TypeOff)+uint64(hdr.TypeLen) > body ||
		uint64(hdr.StrOff)+uint64(hdr.StrLen) > body {
		return hdr, nil, nil, nil, errors.New("BTF header: sections out of bounds")
	}
	raw = raw[hdr.HdrLen:]
	return hdr, bo, raw[hdr.TypeOff : hdr.TypeOff+hdr.TypeLen], raw[hdr.StrOff : hdr.StrOff+hdr.StrLen], nil
}

// cstring returns the NUL-terminated string at off in a BTF string section.
func cstring(strs []byte, off uint32) (string, error) {
	if uint64(off) >= uint64(len(strs)) {
		return "", fmt.Errorf("string offset %d out of bounds", off)
	}
	s := strs[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s), nil
}

// essentialName strips a CO-RE flavour suffix ("task_struct___old" becomes
// "task_struct"), exactly like cilium/ebpf: everything from the last "___".
func essentialName(name string) string {
	if i := strings.LastIndex(name, "___"); i != -1 {
		return name[:i]
	}
	return name
}

// BTF kinds, as in include/uapi/linux/btf.h.
const (
	kindInt       = 1
	kindArray     = 3
	kindStruct    = 4
	kindUnion     = 5
	kindEnum      = 6
	kindFunc      = 12
	kindFuncProto = 13
	kindVar       = 14
	kindDatasec   = 15
	kindDeclTag   = 17
	kindEnum64    = 19
)

// flavouredNames scans a raw BTF type section for type names containing
// "___" and indexes them by essential name. cilium/ebpf's CO-RE engine finds
// such types as candidates for the essential name, but Spec.AnyTypesByName
// only matches full names, so this index is what lets the minimizer see the
// same candidates as btf.CORERelocate.
//
// baseStrings is the base BTF's string section for split (module) BTF.
//
// The same pass reports whether the BTF holds a "bpf_kfunc" decl tag: the
// kernel's kfuncs are then tagged (see features.go).
func flavouredNames(types, strs, baseStrings []byte, bo binary.ByteOrder) (map[string][]string, bool, error) {
	out := make(map[string][]string)
	seen := make(map[string]bool)
	kfuncTags := false
	for off := 0; off < len(types); {
		if len(types)-off < 12 {
			return nil, false, fmt.Errorf("type at offset %d: short buffer", off)
		}
		nameOff := bo.Uint32(types[off:])
		info := bo.Uint32(types[off+4:])
		vlen := int(info & 0xffff)
		kind := (info >> 24) & 0x1f
		off += 12
		switch kind {
		case kindInt, kindVar, kindDeclTag:
			off += 4
		case kindArray:
			off += 12
		case kindStruct, kindUnion, kindDatasec, kindEnum64:
			off += 12 * vlen
		case kindEnum, kindFuncProto:
			off += 8 * vlen
		}
		if off > len(types) {
			return nil, false, errors.New("type data out of bounds")
		}
		if nameOff == 0 {
			continue
		}
		var name string
		var err error
		if baseStrings != nil && nameOff < uint32(len(baseStrings)) {
			name, err = cstring(baseStrings, nameOff)
		} else {
			name, err = cstring(strs, nameOff-uint32(len(baseStrings)))
		}
		if err != nil {
			return nil, false, err
		}
		if kind == kindDeclTag && name == kfuncDeclTag {
			kfuncTags = true
		}
		if !strings.Contains(name, "___") || seen[name] {
			continue
		}
		seen[name] = true
		ess := essentialName(name)
		out[ess] = append(out[ess], name)
	}
	return out, kfuncTags, nil
}

// extCORERecord is one struct bpf_core_relo from .BTF.ext, with its section
// name resolved.
type extCORERecord struct {
	Section string
	InsnOff uint32 // byte offset of the instruction in Section
	TypeID  uint32
	Access  string
	Kind    coreKind
}

// btfExt is what Relocate needs from an object's .BTF.ext section.
type btfExt struct {
	// CORERelos holds every CO-RE relocation record, keyed by section name
	// and instruction byte offset.
	CORERelos map[extKey]extCORERecord
	// COREReloLenOff is the offset of the header's core_relo_len field
	// inside the .BTF.ext section, or -1 if the header has none.
	COREReloLenOff int
}

type extKey struct {
	section string
	off     uint32
}

// parseBTFExt parses the header and the CO-RE relocation records of a
// .BTF.ext section; strs is the string section of the object's .BTF.
func parseBTFExt(ext []byte, bo binary.ByteOrder, strs []byte) (*btfExt, error) {
	out := &btfExt{CORERelos: make(map[extKey]extCORERecord), COREReloLenOff: -1}
	if len(ext) < 8 {
		return nil, errors.New(".BTF.ext header: short buffer")
	}
	if bo.Uint16(ext) != btfMagic {
		return nil, fmt.Errorf(".BTF.ext header: bad magic %#x", bo.Uint16(ext))
	}
	hdrLen := bo.Uint32(ext[4:])
	if uint64(hdrLen) > uint64(len(ext)) {
		return nil, errors.New(".BTF.ext header: length out of bounds")
	}
	// struct btf_ext_header: magic, version, flags, hdr_len, func_info_off,
	// func_info_len, line_info_off, line_info_len, then optionally
	// core_relo_off and core_relo_len.
	if hdrLen < 32 {
		return out, nil
	}
	out.COREReloLenOff = 28
	reloOff, reloLen := bo.Uint32(ext[24:]), bo.Uint32(ext[28:])
	if reloLen == 0 {
		return out, nil
	}
	body := ext[hdrLen:]
	if uint64(reloOff)+uint64(reloLen) > uint64(len(body)) {
		return nil, errors.New(".BTF.ext core_relo: out of bounds")
	}
	data := body[reloOff : reloOff+reloLen]
	if len(data) < 4 {
		return nil, errors.New(".BTF.ext core_relo: short buffer")
	}
	recSize := bo.Uint32(data)
	if recSize < 16 {
		return nil, fmt.Errorf(".BTF.ext core_relo: record size %d too small", recSize)
	}
	data = data[4:]
	for len(data) > 0 {
		if len(data) < 8 {
			return nil, errors.New(".BTF.ext core_relo: truncated section header")
		}
		sec, err := cstring(strs, bo.Uint32(data))
		if err != nil {
			return nil, fmt.Errorf(".BTF.ext core_relo: section name: %w", err)
		}
		n := uint64(bo.Uint32(data[4:]))
		data = data[8:]
		if n*uint64(recSize) > uint64(len(data)) {
			return nil, fmt.Errorf(".BTF.ext core_relo: section %s: truncated records", sec)
		}
		for range n {
			rec := extCORERecord{
				Section: sec,
				InsnOff: bo.Uint32(data),
				TypeID:  bo.Uint32(data[4:]),
				Kind:    coreKind(bo.Uint32(data[12:])),
			}
			if rec.Access, err = cstring(strs, bo.Uint32(data[8:])); err != nil {
				return nil, fmt.Errorf(".BTF.ext core_relo: section %s: access string: %w", sec, err)
			}
			out.CORERelos[extKey{sec, rec.InsnOff}] = rec
			data = data[recSize:]
		}
	}
	return out, nil
}
