// Package elfstrip removes DWARF debug information from relocatable BPF ELF
// objects, in process: it does what `llvm-strip --strip-debug` does to the
// objects clang emits for -target bpf, without running a second program.
//
// The input is produced by clang from untrusted source, so the parser is
// strict: anything it does not expect in such an object is refused with an
// error rather than rewritten.
package elfstrip

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// Sizes of the ELF64 structures.
const (
	ehdrSize = 64
	shdrSize = 64
	symSize  = 24
	relSize  = 16
	relaSize = 24
)

const (
	// maxAlign bounds sh_addralign: larger alignments are refused.
	maxAlign = 1 << 32
	// maxGrowth bounds how much larger than its input an output may be.
	// Removing sections cannot grow a well laid-out object; only the
	// alignment padding of sections the input placed at unaligned offsets
	// can.
	maxGrowth = 1 << 20
	// maxNobits bounds the size of SHT_NOBITS sections such as .bss.
	maxNobits = 1 << 32
)

// ErrMalformed is wrapped by the errors of StripDebug for objects it refuses.
var ErrMalformed = errors.New("malformed or unsupported object")

// section is one section of the input.
type section struct {
	hdr    elf.Section64
	name   string
	data   []byte // content in the input; nil for SHT_NOBITS
	remove bool
	newIdx uint32
	newOff uint64
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("elfstrip: %w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// isDebug tells whether a section called name holds debug information that
// StripDebug removes on its own account.
func isDebug(name string) bool {
	return strings.HasPrefix(name, ".debug_") ||
		strings.HasPrefix(name, ".rel.debug_") ||
		strings.HasPrefix(name, ".rela.debug_")
}

// StripDebug returns obj, a relocatable 64-bit ELF for BPF (either byte
// order), without its DWARF.
//
// It removes every section named .debug_*, the relocation sections that
// apply to removed sections (.rel.debug_*, .rela.debug_*) and
// .llvm_addrsig, which holds symbol indices that change. Symbols defined in
// removed sections (their STT_SECTION symbols, typically) and STT_FILE
// symbols (the source file name, as llvm-strip --strip-debug does) are
// dropped and the others renumbered; kept relocations, section links, st_shndx and
// e_shstrndx are renumbered, the symbol table's sh_info (its first non-local
// symbol) recomputed, and the sections laid out again with their alignment.
// The content of every other section (.BTF, .BTF.ext, program sections,
// .maps, license, data sections and their relocations' offsets and types)
// is unchanged, as are the string tables, which keep the names of removed
// sections.
//
// An object without debug sections is returned as is: the result is obj
// itself. StripDebug does not modify obj.
//
// Objects that are not ELF64 ET_REL for EM_BPF, use extended section
// numbering (SHN_XINDEX), have sections out of bounds or overlapping,
// symbols with out-of-range section indices, or relocations in kept
// sections against symbols that are dropped are refused with an error that
// wraps ErrMalformed.
func StripDebug(obj []byte) ([]byte, error) {
	bo, hdr, err := parseHeader(obj)
	if err != nil {
		return nil, err
	}
	if hdr.Shnum == 0 {
		// No sections at all, so nothing to strip.
		return obj, nil
	}
	secs, err := parseSections(obj, bo, hdr)
	if err != nil {
		return nil, err
	}

	// Decide what goes. .llvm_addrsig goes only with the debug sections:
	// an object without them is returned as is.
	debug := false
	for _, s := range secs[1:] {
		if isDebug(s.name) {
			s.remove, debug = true, true
		}
	}
	if debug {
		for _, s := range secs[1:] {
			if s.name == ".llvm_addrsig" {
				s.remove = true
			}
		}
		for _, s := range secs[1:] {
			if t := elf.SectionType(s.hdr.Type); (t == elf.SHT_REL || t == elf.SHT_RELA) && secs[s.hdr.Info].remove {
				s.remove = true
			}
		}
	}
	var n uint32
	for _, s := range secs {
		if !s.remove {
			s.newIdx = n
			n++
		}
	}
	if secs[hdr.Shstrndx].remove {
		return nil, errorf("section name table %q is removed", secs[hdr.Shstrndx].name)
	}

	// Rewrite (and check) the symbol table and the relocations.
	content := make(map[int][]byte)
	symtab := -1
	var symMap []uint32 // old symbol index -> new, or dropped
	for i, s := range secs {
		if elf.SectionType(s.hdr.Type) == elf.SHT_SYMTAB {
			if symtab >= 0 {
				return nil, errorf("more than one symbol table")
			}
			symtab = i
		}
	}
	if symtab >= 0 {
		if secs[symtab].remove {
			return nil, errorf("symbol table %q is removed", secs[symtab].name)
		}
		data, info, m, err := stripSymbols(secs, symtab, bo)
		if err != nil {
			return nil, err
		}
		content[symtab], symMap = data, m
		secs[symtab].hdr.Info = info
	}
	for i, s := range secs {
		t := elf.SectionType(s.hdr.Type)
		if s.remove || (t != elf.SHT_REL && t != elf.SHT_RELA) {
			continue
		}
		if symtab < 0 || s.hdr.Link != uint32(symtab) {
			return nil, errorf("relocation section %q: sh_link %d is not the symbol table", s.name, s.hdr.Link)
		}
		data, err := remapRelocations(s, symMap, bo, secs[s.hdr.Info].name)
		if err != nil {
			return nil, err
		}
		content[i] = data
	}

	// Check the kept sections and renumber their links.
	for _, s := range secs[1:] {
		if s.remove {
			continue
		}
		if elf.SectionFlag(s.hdr.Flags)&elf.SHF_COMPRESSED != 0 {
			return nil, errorf("section %q: compressed sections are not supported", s.name)
		}
		if s.hdr.Link != 0 {
			if s.hdr.Link >= uint32(len(secs)) || secs[s.hdr.Link].remove {
				return nil, errorf("section %q: sh_link %d is out of range or removed", s.name, s.hdr.Link)
			}
			s.hdr.Link = secs[s.hdr.Link].newIdx
		}
		t := elf.SectionType(s.hdr.Type)
		if t == elf.SHT_REL || t == elf.SHT_RELA || elf.SectionFlag(s.hdr.Flags)&elf.SHF_INFO_LINK != 0 {
			if s.hdr.Info >= uint32(len(secs)) || secs[s.hdr.Info].remove {
				return nil, errorf("section %q: sh_info %d is out of range or removed", s.name, s.hdr.Info)
			}
			s.hdr.Info = secs[s.hdr.Info].newIdx
		}
	}

	// Everything is checked, also for an object that stays as it is.
	if !debug {
		return obj, nil
	}

	// Lay out the kept sections in their input order, each at its
	// alignment, then the section header table.
	order := make([]int, 0, n)
	for i, s := range secs[1:] {
		if !s.remove {
			order = append(order, i+1)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch oa, ob := secs[a].hdr.Off, secs[b].hdr.Off; {
		case oa < ob:
			return -1
		case oa > ob:
			return 1
		}
		return 0
	})
	limit := uint64(len(obj)) + maxGrowth
	off := uint64(ehdrSize)
	for _, i := range order {
		s := secs[i]
		if data, ok := content[i]; ok {
			s.hdr.Size = uint64(len(data))
		} else {
			content[i] = s.data
		}
		off = alignUp(off, max(s.hdr.Addralign, 1))
		if off > limit {
			return nil, errorf("output would exceed %d bytes", limit)
		}
		s.newOff = off
		if elf.SectionType(s.hdr.Type) != elf.SHT_NOBITS {
			off += s.hdr.Size // Size <= len(obj): checked by parseSections
		}
	}
	shoff := alignUp(off, 8)
	total := shoff + uint64(n)*shdrSize
	if total > limit {
		return nil, errorf("output would exceed %d bytes", limit)
	}

	out := make([]byte, total)
	hdr.Shoff = shoff
	hdr.Shnum = uint16(n)
	hdr.Shstrndx = uint16(secs[hdr.Shstrndx].newIdx)
	if _, err := binary.Encode(out, bo, &hdr); err != nil {
		return nil, fmt.Errorf("elfstrip: encode ELF header: %w", err)
	}
	for _, i := range order {
		s := secs[i]
		copy(out[s.newOff:], content[i])
		sh := s.hdr
		sh.Off = s.newOff
		if _, err := binary.Encode(out[shoff+uint64(s.newIdx)*shdrSize:], bo, &sh); err != nil {
			return nil, fmt.Errorf("elfstrip: encode section header %q: %w", s.name, err)
		}
	}
	// Section 0 stays all zero.
	return out, nil
}

// parseHeader checks and decodes the ELF header.
func parseHeader(obj []byte) (binary.ByteOrder, elf.Header64, error) {
	var hdr elf.Header64
	if len(obj) < ehdrSize {
		return nil, hdr, errorf("%d bytes is too short for an ELF64 header", len(obj))
	}
	if !bytes.Equal(obj[:4], []byte(elf.ELFMAG)) {
		return nil, hdr, errorf("not an ELF file")
	}
	if c := elf.Class(obj[elf.EI_CLASS]); c != elf.ELFCLASS64 {
		return nil, hdr, errorf("class %v, want ELFCLASS64", c)
	}
	var bo binary.ByteOrder
	switch d := elf.Data(obj[elf.EI_DATA]); d {
	case elf.ELFDATA2LSB:
		bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		bo = binary.BigEndian
	default:
		return nil, hdr, errorf("unknown data encoding %v", d)
	}
	if v := elf.Version(obj[elf.EI_VERSION]); v != elf.EV_CURRENT {
		return nil, hdr, errorf("ELF version %v", v)
	}
	if _, err := binary.Decode(obj[:ehdrSize], bo, &hdr); err != nil {
		return nil, hdr, fmt.Errorf("elfstrip: decode ELF header: %w", err)
	}
	switch {
	case elf.Type(hdr.Type) != elf.ET_REL:
		return nil, hdr, errorf("type %v, want ET_REL", elf.Type(hdr.Type))
	case elf.Machine(hdr.Machine) != elf.EM_BPF:
		return nil, hdr, errorf("machine %v, want EM_BPF", elf.Machine(hdr.Machine))
	case elf.Version(hdr.Version) != elf.EV_CURRENT:
		return nil, hdr, errorf("e_version %v", elf.Version(hdr.Version))
	case hdr.Ehsize != ehdrSize:
		return nil, hdr, errorf("e_ehsize %d", hdr.Ehsize)
	case hdr.Phnum != 0 || hdr.Phoff != 0:
		return nil, hdr, errorf("relocatable object with program headers")
	case hdr.Shnum == 0 && hdr.Shoff != 0:
		return nil, hdr, errorf("extended section numbering (e_shnum 0) is not supported")
	case hdr.Shnum >= uint16(elf.SHN_LORESERVE):
		return nil, hdr, errorf("e_shnum %#x is reserved", hdr.Shnum)
	case hdr.Shstrndx == uint16(elf.SHN_XINDEX):
		return nil, hdr, errorf("extended section name table index (SHN_XINDEX) is not supported")
	}
	return bo, hdr, nil
}

// parseSections checks and decodes the section headers and names.
func parseSections(obj []byte, bo binary.ByteOrder, hdr elf.Header64) ([]*section, error) {
	size := uint64(len(obj))
	shnum := uint64(hdr.Shnum)
	switch {
	case hdr.Shentsize != shdrSize:
		return nil, errorf("e_shentsize %d", hdr.Shentsize)
	case hdr.Shoff < ehdrSize || hdr.Shoff > size || shnum*shdrSize > size-hdr.Shoff:
		return nil, errorf("section header table [%#x, +%d×%d) out of bounds", hdr.Shoff, shnum, shdrSize)
	case hdr.Shstrndx == 0 || uint64(hdr.Shstrndx) >= shnum:
		return nil, errorf("e_shstrndx %d out of range", hdr.Shstrndx)
	}

	type extent struct{ start, end uint64 }
	extents := []extent{{0, ehdrSize}, {hdr.Shoff, hdr.Shoff + shnum*shdrSize}}
	secs := make([]*section, shnum)
	for i := range secs {
		s := &section{}
		secs[i] = s
		off := hdr.Shoff + uint64(i)*shdrSize
		if _, err := binary.Decode(obj[off:off+shdrSize], bo, &s.hdr); err != nil {
			return nil, fmt.Errorf("elfstrip: decode section header %d: %w", i, err)
		}
		if i == 0 {
			if s.hdr != (elf.Section64{}) {
				return nil, errorf("section 0 is not null (extended numbering is not supported)")
			}
			continue
		}
		switch t := elf.SectionType(s.hdr.Type); t {
		case elf.SHT_NULL, elf.SHT_SYMTAB_SHNDX, elf.SHT_GROUP, elf.SHT_DYNSYM, elf.SHT_DYNAMIC:
			return nil, errorf("section %d: unsupported type %v", i, t)
		case elf.SHT_NOBITS:
			if s.hdr.Size > maxNobits {
				return nil, errorf("section %d: SHT_NOBITS size %#x", i, s.hdr.Size)
			}
		default:
			if s.hdr.Off > size || s.hdr.Size > size-s.hdr.Off {
				return nil, errorf("section %d: [%#x, +%#x) out of bounds", i, s.hdr.Off, s.hdr.Size)
			}
			s.data = obj[s.hdr.Off : s.hdr.Off+s.hdr.Size]
			if s.hdr.Size > 0 {
				extents = append(extents, extent{s.hdr.Off, s.hdr.Off + s.hdr.Size})
			}
		}
		if a := s.hdr.Addralign; a > maxAlign || bits.OnesCount64(a) > 1 {
			return nil, errorf("section %d: alignment %#x", i, a)
		}
		if t := elf.SectionType(s.hdr.Type); (t == elf.SHT_REL || t == elf.SHT_RELA) && (s.hdr.Info == 0 || uint64(s.hdr.Info) >= shnum) {
			return nil, errorf("section %d: relocated section %d out of range", i, s.hdr.Info)
		}
	}
	slices.SortFunc(extents, func(a, b extent) int {
		if a.start != b.start {
			if a.start < b.start {
				return -1
			}
			return 1
		}
		return 0
	})
	for i := 1; i < len(extents); i++ {
		if extents[i].start < extents[i-1].end {
			return nil, errorf("sections, ELF header or section header table overlap at %#x", extents[i].start)
		}
	}

	strtab := secs[hdr.Shstrndx]
	if elf.SectionType(strtab.hdr.Type) != elf.SHT_STRTAB {
		return nil, errorf("section name table %d is %v", hdr.Shstrndx, elf.SectionType(strtab.hdr.Type))
	}
	for i, s := range secs[1:] {
		name, ok := cstring(strtab.data, s.hdr.Name)
		if !ok {
			return nil, errorf("section %d: name offset %d out of bounds", i+1, s.hdr.Name)
		}
		s.name = name
	}
	return secs, nil
}

// cstring returns the NUL-terminated string at off in tab.
func cstring(tab []byte, off uint32) (string, bool) {
	if uint64(off) >= uint64(len(tab)) {
		return "", false
	}
	end := bytes.IndexByte(tab[off:], 0)
	if end < 0 {
		return "", false
	}
	return string(tab[off : int(off)+end]), true
}

// dropped marks a symbol that StripDebug drops in a symbol index map.
const dropped = ^uint32(0)

// stripSymbols returns the symbol table secs[symtab] without the symbols
// defined in removed sections and with st_shndx renumbered, its new sh_info
// and the map from old symbol indices to new ones.
func stripSymbols(secs []*section, symtab int, bo binary.ByteOrder) ([]byte, uint32, []uint32, error) {
	s := secs[symtab]
	if s.hdr.Entsize != symSize || s.hdr.Size%symSize != 0 || s.hdr.Size == 0 {
		return nil, 0, nil, errorf("symbol table %q: size %d, entry size %d", s.name, s.hdr.Size, s.hdr.Entsize)
	}
	if l := s.hdr.Link; l == 0 || l >= uint32(len(secs)) || elf.SectionType(secs[l].hdr.Type) != elf.SHT_STRTAB {
		return nil, 0, nil, errorf("symbol table %q: sh_link %d is not a string table", s.name, l)
	}
	nsyms := uint64(len(s.data)) / symSize
	firstGlobal := uint64(s.hdr.Info)
	if firstGlobal == 0 || firstGlobal > nsyms {
		return nil, 0, nil, errorf("symbol table %q: sh_info %d out of range [1, %d]", s.name, firstGlobal, nsyms)
	}
	if !allZero(s.data[:symSize]) {
		return nil, 0, nil, errorf("symbol table %q: symbol 0 is not null", s.name)
	}

	out := make([]byte, 0, len(s.data))
	m := make([]uint32, nsyms)
	var info uint32
	for i := range nsyms {
		ent := s.data[i*symSize : (i+1)*symSize]
		bind := elf.ST_BIND(ent[4])
		if i > 0 && (bind == elf.STB_LOCAL) != (i < firstGlobal) {
			return nil, 0, nil, errorf("symbol table %q: symbol %d binding %v on the wrong side of sh_info %d", s.name, i, bind, firstGlobal)
		}
		shndx := elf.SectionIndex(bo.Uint16(ent[6:8]))
		newShndx := shndx
		switch {
		case i == 0, shndx == elf.SHN_UNDEF, shndx == elf.SHN_ABS, shndx == elf.SHN_COMMON:
		case shndx == elf.SHN_XINDEX:
			return nil, 0, nil, errorf("symbol table %q: symbol %d: SHN_XINDEX is not supported", s.name, i)
		case shndx >= elf.SHN_LORESERVE:
			return nil, 0, nil, errorf("symbol table %q: symbol %d: unsupported section index %v", s.name, i, shndx)
		case int(shndx) >= len(secs):
			return nil, 0, nil, errorf("symbol table %q: symbol %d: section index %d out of range", s.name, i, shndx)
		case secs[shndx].remove:
			m[i] = dropped
			continue
		default:
			newShndx = elf.SectionIndex(secs[shndx].newIdx)
		}
		if i > 0 && elf.ST_TYPE(ent[4]) == elf.STT_FILE {
			// The source file name is debug information too; llvm-strip
			// --strip-debug drops it as well.
			m[i] = dropped
			continue
		}
		m[i] = uint32(len(out) / symSize)
		if i < firstGlobal {
			info = m[i] + 1
		}
		out = append(out, ent...)
		bo.PutUint16(out[len(out)-symSize+6:], uint16(newShndx))
	}
	return out, info, m, nil
}

// remapRelocations returns the content of relocation section s with its
// symbol indices mapped through symMap. target names the section the
// relocations apply to, for errors.
func remapRelocations(s *section, symMap []uint32, bo binary.ByteOrder, target string) ([]byte, error) {
	ent := uint64(relSize)
	if elf.SectionType(s.hdr.Type) == elf.SHT_RELA {
		ent = relaSize
	}
	if s.hdr.Entsize != ent || s.hdr.Size%ent != 0 {
		return nil, errorf("relocation section %q: size %d, entry size %d", s.name, s.hdr.Size, s.hdr.Entsize)
	}
	out := slices.Clone(s.data)
	for off := uint64(0); off < uint64(len(out)); off += ent {
		info := out[off+8 : off+16]
		r := bo.Uint64(info)
		sym := r >> 32
		if sym >= uint64(len(symMap)) {
			return nil, errorf("relocation section %q: entry %d: symbol %d out of range", s.name, off/ent, sym)
		}
		to := symMap[sym]
		if to == dropped {
			return nil, errorf("relocation section %q: entry %d in kept section %q refers to symbol %d of a removed section", s.name, off/ent, target, sym)
		}
		bo.PutUint64(info, uint64(to)<<32|r&0xffffffff)
	}
	return out, nil
}

func alignUp(off, align uint64) uint64 {
	return (off + align - 1) &^ (align - 1)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
