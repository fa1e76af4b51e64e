package core

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Object is a parsed CO-RE BPF ELF object: parse it once per build with
// LoadObject, then relocate it against many kernels. It is safe for
// concurrent use.
type Object struct {
	raw       []byte
	spec      *ebpf.CollectionSpec
	byteOrder binary.ByteOrder
	programs  []*program
	// coreReloLenPos is the file offset of the .BTF.ext header's
	// core_relo_len field, or -1.
	coreReloLenPos int64
	// lookupNames are the kernel type names Relocate looks up.
	lookupNames []string
	// weak holds the object's undefined weak symbols (__weak externs).
	weak map[string]bool
	// maps are the maps whose types every program needs.
	maps []mapNeed
}

// program is one program of an Object, with its CO-RE relocations.
type program struct {
	spec  *ebpf.ProgramSpec
	insns asm.Instructions
	// raw is the raw instruction offset of each instruction in insns.
	raw []int
	// byRaw maps raw offsets to indices into insns.
	byRaw map[int]int
	// funcs maps the program's function symbols (the program itself and
	// the subprograms it calls) to their raw offsets.
	funcs  map[string]int
	relos  []*relo
	crs    []*btf.CORERelocation
	kfuncs []string
	// targets are the tracing targets the program needs; Status is filled
	// in per kernel.
	targets []targetReq
	// needs are the BPF features the program needs (features.go).
	needs []needReq
	// weakKfuncCalls and weakKfuncLoads map the raw offsets of the calls to
	// weak kfuncs, and of the loads of their addresses (bpf_ksym_exists),
	// to the kfuncs' names.
	weakKfuncCalls, weakKfuncLoads map[int]string
}

// relo is one CO-RE relocation of a program.
type relo struct {
	raw     int // raw instruction offset in the program
	kind    coreKind
	local   btf.Type // the relocation's local type
	localID btf.TypeID
	acc     []int
	path    string
	// pos is the file offset of the relocated instruction, dword whether it
	// is a 16-byte ld_imm64.
	pos   int64
	dword bool
}

// funcSym is a function symbol of the ELF object.
type funcSym struct {
	section string
	value   uint64
	pos     int64 // file offset of the function's first instruction
	end     int64
}

// LoadObject parses a CO-RE BPF ELF object, as produced by
// clang -target bpf -g.
func LoadObject(raw []byte) (*Object, error) {
	raw = slices.Clone(raw)
	f, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	defer f.Close()
	// Parsed as libbpf would (__weak .kconfig externs included); raw
	// itself is left as it is.
	spec, _, err := kconfig.LoadSpec(raw)
	if err != nil {
		return nil, fmt.Errorf("load collection spec: %w", err)
	}
	o := &Object{raw: raw, spec: spec, byteOrder: f.ByteOrder, coreReloLenPos: -1, maps: objectMaps(spec)}
	if o.weak, err = weakSymbols(f); err != nil {
		return nil, err
	}

	ext, err := o.readBTFExt(f)
	if err != nil {
		return nil, err
	}
	funcs, err := functionSymbols(f)
	if err != nil {
		return nil, err
	}

	names := make(map[string]bool)
	for _, name := range slices.Sorted(maps.Keys(spec.Programs)) {
		p, err := o.newProgram(spec.Programs[name], funcs, ext)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", name, err)
		}
		o.programs = append(o.programs, p)
		for _, r := range p.relos {
			if r.kind != kindTypeIDLocal {
				names[essentialName(r.local.TypeName())] = true
			}
		}
		for _, t := range p.targets {
			for _, l := range t.lookups {
				names[l.name] = true
			}
		}
	}
	o.lookupNames = slices.Sorted(maps.Keys(names))
	return o, nil
}

// readBTFExt parses the object's CO-RE relocation records and notes where
// the .BTF.ext header's core_relo_len field is.
func (o *Object) readBTFExt(f *elf.File) (*btfExt, error) {
	empty := &btfExt{CORERelos: map[extKey]extCORERecord{}, COREReloLenOff: -1}
	extSec := f.Section(".BTF.ext")
	btfSec := f.Section(".BTF")
	if extSec == nil || btfSec == nil {
		return empty, nil
	}
	if extSec.Type == elf.SHT_NOBITS || btfSec.Type == elf.SHT_NOBITS {
		return empty, nil
	}
	if extSec.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, errors.New(".BTF.ext: compressed sections are not supported")
	}
	rawBTF, err := btfSec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .BTF: %w", err)
	}
	_, _, _, strs, err := parseBTFHeader(rawBTF)
	if err != nil {
		return nil, fmt.Errorf(".BTF: %w", err)
	}
	rawExt, err := extSec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .BTF.ext: %w", err)
	}
	ext, err := parseBTFExt(rawExt, f.ByteOrder, strs)
	if err != nil {
		return nil, err
	}
	if ext.COREReloLenOff >= 0 {
		o.coreReloLenPos = int64(extSec.Offset) + int64(ext.COREReloLenOff)
	}
	return ext, nil
}

// functionSymbols returns the ELF object's function symbols by name.
func functionSymbols(f *elf.File) (map[string]funcSym, error) {
	syms, err := f.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, fmt.Errorf("read symbols: %w", err)
	}
	out := make(map[string]funcSym)
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) {
			continue
		}
		sec := f.Sections[s.Section]
		if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_EXECINSTR == 0 {
			continue
		}
		if s.Value+s.Size > sec.Size {
			return nil, fmt.Errorf("symbol %s: out of bounds of section %s", s.Name, sec.Name)
		}
		if _, dup := out[s.Name]; dup {
			return nil, fmt.Errorf("duplicate function symbol %s", s.Name)
		}
		pos := int64(sec.Offset + s.Value)
		out[s.Name] = funcSym{section: sec.Name, value: s.Value, pos: pos, end: pos + int64(s.Size)}
	}
	return out, nil
}

// newProgram indexes a program's instructions and matches each CO-RE
// relocation cilium/ebpf attached to an instruction with its .BTF.ext
// record and its position in the ELF file.
//
// cilium/ebpf flattens a program and the subprograms it calls into one
// instruction stream, marking each function's first instruction with the
// function's symbol. The ELF symbol table gives each function's section and
// offset, so an instruction's position in the file is its function's
// position plus its raw offset (in 8-byte slots; ld_imm64 takes two) from
// the function's start.
func (o *Object) newProgram(ps *ebpf.ProgramSpec, funcs map[string]funcSym, ext *btfExt) (*program, error) {
	p := &program{
		spec:  ps,
		insns: ps.Instructions,
		byRaw: make(map[int]int, len(ps.Instructions)),
		funcs: make(map[string]int),
	}
	var (
		fn      funcSym
		fnName  string
		fnStart int
		raw     int
	)
	for i := range p.insns {
		ins := &p.insns[i]
		if sym := ins.Symbol(); sym != "" {
			s, ok := funcs[sym]
			if !ok {
				return nil, fmt.Errorf("function %s: no ELF symbol", sym)
			}
			fn, fnName, fnStart = s, sym, raw
			p.funcs[sym] = raw
		}
		p.raw = append(p.raw, raw)
		p.byRaw[raw] = i

		if ins.IsKfuncCall() && ins.Reference() != "" && !slices.Contains(p.kfuncs, ins.Reference()) {
			p.kfuncs = append(p.kfuncs, ins.Reference())
		}
		if ref := ins.Reference(); ref != "" && o.weak[ref] {
			switch {
			case ins.IsKfuncCall():
				if p.weakKfuncCalls == nil {
					p.weakKfuncCalls = make(map[int]string)
				}
				p.weakKfuncCalls[raw] = ref
			case ins.OpCode.IsDWordLoad():
				if p.weakKfuncLoads == nil {
					p.weakKfuncLoads = make(map[int]string)
				}
				p.weakKfuncLoads[raw] = ref
			}
		}

		if cr := btf.CORERelocationMetadata(ins); cr != nil {
			if fnName == "" {
				return nil, fmt.Errorf("instruction %d: CO-RE relocation outside of a function", raw)
			}
			off := fn.value + uint64(raw-fnStart)*asm.InstructionSize
			pos := fn.pos + int64(raw-fnStart)*asm.InstructionSize
			if pos+int64(ins.Size()) > fn.end {
				return nil, fmt.Errorf("instruction %d: beyond the end of function %s", raw, fnName)
			}
			rec, ok := ext.CORERelos[extKey{fn.section, uint32(off)}]
			if !ok {
				return nil, fmt.Errorf("instruction %d (%s+%d): no .BTF.ext CO-RE record", raw, fn.section, off)
			}
			r, err := o.newRelo(cr, rec)
			if err != nil {
				return nil, fmt.Errorf("instruction %d (%s+%d): %w", raw, fn.section, off, err)
			}
			r.raw, r.pos, r.dword = raw, pos, ins.OpCode.IsDWordLoad()
			p.relos = append(p.relos, r)
			p.crs = append(p.crs, cr)
		}
		raw += int(ins.Width())
	}
	p.targets = programTargets(ps, p.kfuncs)
	p.needs = programNeeds(ps, p.insns, p.raw, o.maps)
	return p, nil
}

// newRelo decodes a CO-RE relocation record and checks that it is the one
// cilium/ebpf attached to the instruction.
func (o *Object) newRelo(cr *btf.CORERelocation, rec extCORERecord) (*relo, error) {
	r := &relo{kind: rec.Kind, localID: btf.TypeID(rec.TypeID)}
	s := cr.String()
	if !strings.HasPrefix(s, "CORERelocation("+rec.Kind.ciliumName()+",") ||
		!strings.HasSuffix(s, fmt.Sprintf(", local_id=%d)", rec.TypeID)) {
		return nil, fmt.Errorf("CO-RE record (%s, type %d) does not match %s", rec.Kind, rec.TypeID, s)
	}
	var err error
	if r.local, err = o.spec.Types.TypeByID(r.localID); err != nil {
		return nil, fmt.Errorf("CO-RE local type: %w", err)
	}
	for part := range strings.SplitSeq(rec.Access, ":") {
		n, err := strconv.ParseUint(part, 10, 31)
		if err != nil {
			return nil, fmt.Errorf("CO-RE access string %q: %w", rec.Access, err)
		}
		r.acc = append(r.acc, int(n))
	}
	r.path = accessPath(r.kind, r.local, r.acc)
	return r, nil
}

// accessPath renders a relocation as a human-readable access path:
// "task_struct.real_parent", "sk_buff.cb[2]", "enum bpf_func_id::BPF_FUNC_map_lookup_elem",
// "struct task_struct". Anonymous struct and union members are transparent,
// as in C. Root type names are essential names (without ___flavour).
func accessPath(kind coreKind, local btf.Type, acc []int) string {
	name := essentialName(local.TypeName())
	switch {
	case kind.isEnum():
		e, ok := btf.As[*btf.Enum](local)
		if !ok || len(acc) == 0 || acc[0] >= len(e.Values) {
			return fmt.Sprintf("enum %s::#%v", name, acc)
		}
		return fmt.Sprintf("enum %s::%s", name, e.Values[acc[0]].Name)

	case kind.isField():
		var b strings.Builder
		b.WriteString(name)
		if len(acc) > 0 && acc[0] != 0 {
			fmt.Fprintf(&b, "[%d]", acc[0])
		}
		t := local
		for _, a := range acc[min(1, len(acc)):] {
			switch u := btf.UnderlyingType(t).(type) {
			case *btf.Struct, *btf.Union:
				members := compositeMembers(u)
				if a >= len(members) {
					fmt.Fprintf(&b, ".#%d", a)
					return b.String()
				}
				m := members[a]
				t = m.Type
				if m.Name != "" {
					b.WriteString(".")
					b.WriteString(m.Name)
				}
			case *btf.Array:
				fmt.Fprintf(&b, "[%d]", a)
				t = u.Type
			default:
				fmt.Fprintf(&b, ":%d", a)
			}
		}
		return b.String()
	}
	return typeKindPrefix(local) + name
}

// typeKindPrefix is the C keyword that goes before a type's name.
func typeKindPrefix(t btf.Type) string {
	switch t := t.(type) {
	case *btf.Struct:
		return "struct "
	case *btf.Union:
		return "union "
	case *btf.Enum:
		return "enum "
	case *btf.Typedef:
		return "typedef "
	case *btf.Fwd:
		return t.Kind.String() + " "
	}
	return ""
}

// typeString names a type C-style: "struct task_struct", "enum pid_type",
// "typedef pid_t", "int".
func typeString(t btf.Type) string {
	name := t.TypeName()
	switch t := t.(type) {
	case *btf.Struct:
		return "struct " + name
	case *btf.Union:
		return "union " + name
	case *btf.Enum:
		return "enum " + name
	case *btf.Typedef:
		return "typedef " + name
	case *btf.Fwd:
		return t.Kind.String() + " " + name
	case *btf.Func:
		return "func " + name
	}
	if name == "" {
		return fmt.Sprintf("%T", t)
	}
	return name
}

func compositeMembers(t btf.Type) []btf.Member {
	switch t := t.(type) {
	case *btf.Struct:
		return t.Members
	case *btf.Union:
		return t.Members
	}
	return nil
}
