// Package kconfig resolves an object's `.kconfig` externs the way libbpf
// does (libbpf.c: find_kcfg_type, bpf_object__resolve_externs,
// bpf_object__process_kconfig_line, set_kcfg_value_*), for objects loaded
// with cilium/ebpf.
//
// cilium/ebpf (v0.22) refuses what libbpf accepts and real tools use: a
// __weak extern (`extern bool CONFIG_X __kconfig __weak;`) fails to parse,
// LINUX_KERNEL_VERSION or LINUX_HAS_SYSCALL_WRAPPER declared through a
// typedef (`extern u32 LINUX_KERNEL_VERSION __kconfig;`) is refused,
// LINUX_HAS_BPF_COOKIE (which usdt.bpf.h declares) is looked up in the
// kernel config and not found, a missing __weak option is an error instead
// of zero, and a char or tristate typedef is refused. This package parses
// the object so that cilium/ebpf accepts it (LoadSpec), computes the values
// as libbpf would (Externs.Values) and turns the extern loads into loads from
// an ordinary read-only array map named ".kconfig" holding them
// (Externs.Apply), so that cilium/ebpf's own kconfig path is not taken.
package kconfig

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// MapName is the map Apply adds to a spec.
const MapName = ".kconfig"

// Kind is an extern's kind as libbpf classifies it (enum kcfg_type).
type Kind int

// The kinds of find_kcfg_type.
const (
	KindUnknown Kind = iota
	KindBool
	KindChar
	KindInt
	KindTristate
	KindCharArray
)

func (k Kind) String() string {
	return [...]string{"unknown", "bool", "char", "int", "tristate", "char array"}[k]
}

// Extern is one `.kconfig` extern.
type Extern struct {
	Name   string
	Offset uint32 // in the .kconfig section
	Size   uint32
	Kind   Kind
	Signed bool
	Weak   bool
}

// Externs are an object's `.kconfig` externs.
type Externs struct {
	Vars    []Extern
	datasec *btf.Datasec
	// refs maps (function, instruction offset in it) to the extern the
	// instruction loads.
	refs map[insRef]string
}

type insRef struct {
	fn  string
	off asm.RawInstructionOffset
}

// LoadSpec parses obj like ebpf.LoadCollectionSpecFromReader, also when it
// has __weak `.kconfig` externs or __weak definitions (usdt.bpf.h's maps and
// functions), which cilium/ebpf refuses and libbpf accepts: the object is
// parsed from a copy where they are bound globally; obj is not modified.
// Externs is nil when the object has no `.kconfig` externs.
func LoadSpec(obj []byte) (*ebpf.CollectionSpec, *Externs, error) {
	ext, patched, err := scan(obj)
	if err != nil {
		return nil, nil, err
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(patched))
	if err != nil {
		return nil, nil, err
	}
	if err := staticHidden(obj, spec); err != nil {
		return nil, nil, err
	}
	return spec, ext, nil
}

// staticHidden gives the hidden global functions of obj static linkage in
// their BTF, as libbpf does (mark_btf_static): the verifier then checks
// them in their callers' context, not on their own. usdt.bpf.h's
// bpf_usdt_arg() is such a function (__weak __hidden); verified on its
// own, its result pointer may be NULL and it is refused.
func staticHidden(obj []byte, spec *ebpf.CollectionSpec) error {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return fmt.Errorf("parse ELF: %w", err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil // no symbols, no hidden functions
	}
	hidden := make(map[string]bool)
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && elf.ST_BIND(s.Info) != elf.STB_LOCAL &&
			elf.ST_VISIBILITY(s.Other) == elf.STV_HIDDEN && s.Section != elf.SHN_UNDEF {
			hidden[s.Name] = true
		}
	}
	if len(hidden) == 0 {
		return nil
	}
	for _, ps := range spec.Programs {
		for i := range ps.Instructions {
			ins := &ps.Instructions[i]
			if fn := btf.FuncMetadata(ins); fn != nil && hidden[ins.Symbol()] && i > 0 {
				fn.Linkage = btf.StaticFunc
			}
		}
	}
	return nil
}

// scan finds the .kconfig externs of obj and returns a copy of obj whose
// weak ones are bound globally.
func scan(obj []byte) (*Externs, []byte, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, nil, fmt.Errorf("parse ELF: %w", err)
	}
	defer f.Close()
	if len(obj) == 0 {
		return nil, obj, nil
	}
	var ds *btf.Datasec
	if f.Section(".BTF") != nil {
		if spec, err := btf.LoadSpecFromReader(bytes.NewReader(obj)); err == nil {
			spec.TypeByName(".kconfig", &ds)
		}
	}
	if ds == nil {
		patched, err := bindWeakGlobally(f, obj, nil)
		return nil, patched, err
	}
	ext := &Externs{datasec: ds, refs: make(map[insRef]string)}
	byName := make(map[string]int)
	for _, vsi := range ds.Vars {
		v, ok := vsi.Type.(*btf.Var)
		if !ok {
			return nil, nil, fmt.Errorf(".kconfig: %s is not a variable", vsi.Type)
		}
		kind, signed := kindOf(v.Type)
		if kind == KindUnknown {
			return nil, nil, fmt.Errorf("extern (kcfg) %s: type %s is unsupported", v.Name, v.Type)
		}
		byName[v.Name] = len(ext.Vars)
		ext.Vars = append(ext.Vars, Extern{Name: v.Name, Offset: vsi.Offset, Size: vsi.Size, Kind: kind, Signed: signed})
	}

	syms, err := f.Symbols()
	if err != nil {
		return nil, nil, fmt.Errorf("ELF symbols: %w", err)
	}
	for _, s := range syms {
		if j, ok := byName[s.Name]; ok && s.Section == elf.SHN_UNDEF && elf.ST_BIND(s.Info) == elf.STB_WEAK {
			ext.Vars[j].Weak = true
		}
	}

	patched, err := bindWeakGlobally(f, obj, byName)
	if err != nil {
		return nil, nil, err
	}

	// Which instruction of which function loads which extern: from the
	// relocation sections.
	type fn struct {
		name        string
		start, size uint64
	}
	funcs := make(map[elf.SectionIndex][]fn)
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section < elf.SHN_LORESERVE {
			funcs[s.Section] = append(funcs[s.Section], fn{s.Name, s.Value, s.Size})
		}
	}
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_REL || int(sec.Info) >= len(f.Sections) {
			continue
		}
		target := elf.SectionIndex(sec.Info)
		data, err := sec.Data()
		if err != nil {
			return nil, nil, fmt.Errorf("ELF %s: %w", sec.Name, err)
		}
		for r := 0; r+16 <= len(data); r += 16 {
			off := f.ByteOrder.Uint64(data[r:])
			info := f.ByteOrder.Uint64(data[r+8:])
			si := int(elf.R_SYM64(info))
			if si == 0 || si > len(syms) {
				continue
			}
			name := syms[si-1].Name
			if _, ok := byName[name]; !ok || syms[si-1].Section != elf.SHN_UNDEF {
				continue
			}
			for _, fn := range funcs[target] {
				if off >= fn.start && (off < fn.start+fn.size || fn.size == 0) {
					ext.refs[insRef{fn.name, asm.RawInstructionOffset((off - fn.start) / asm.InstructionSize)}] = name
				}
			}
		}
	}
	return ext, patched, nil
}

// bindWeakGlobally returns a copy of obj whose __weak symbols cilium/ebpf
// refuses are bound globally: the definitions (usdt.bpf.h's maps and
// functions; in a single object, as libbpf loads it, a weak definition is
// the definition) and the undefined .kconfig externs in kconfigExterns. Weak
// __ksym externs, which cilium/ebpf handles, stay weak.
func bindWeakGlobally(f *elf.File, obj []byte, kconfigExterns map[string]int) ([]byte, error) {
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("ELF symbols: %w", err)
	}
	symtab := f.SectionByType(elf.SHT_SYMTAB)
	if symtab == nil || f.Class != elf.ELFCLASS64 {
		return obj, nil // cilium/ebpf reports it
	}
	patched := obj
	for i, s := range syms {
		if elf.ST_BIND(s.Info) != elf.STB_WEAK {
			continue
		}
		if _, ok := kconfigExterns[s.Name]; !ok && s.Section == elf.SHN_UNDEF {
			continue
		}
		if &patched[0] == &obj[0] {
			patched = bytes.Clone(obj)
		}
		// Symbols() leaves out the null symbol 0: s is entry i+1. st_info
		// is byte 4 of an Elf64_Sym.
		off := symtab.Offset + uint64(i+1)*elf.Sym64Size + 4
		if off >= uint64(len(patched)) {
			return nil, errors.New("ELF: symbol table out of bounds")
		}
		patched[off] = byte(elf.STB_GLOBAL)<<4 | byte(elf.ST_TYPE(s.Info))
	}
	return patched, nil
}

// kindOf is libbpf's find_kcfg_type: typedefs and qualifiers are skipped.
func kindOf(t btf.Type) (Kind, bool) {
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		if t.Encoding == btf.Bool {
			if t.Size == 1 {
				return KindBool, false
			}
			return KindUnknown, false
		}
		signed := t.Encoding == btf.Signed
		if t.Size == 1 {
			return KindChar, signed
		}
		if t.Size > 8 || t.Size&(t.Size-1) != 0 {
			return KindUnknown, false
		}
		return KindInt, signed
	case *btf.Enum:
		if t.Name != "libbpf_tristate" || (t.Size != 4 && t.Size != 8) {
			return KindUnknown, false
		}
		return KindTristate, false
	case *btf.Array:
		if t.Nelems == 0 {
			return KindUnknown, false
		}
		if k, _ := kindOf(t.Type); k != KindChar {
			return KindUnknown, false
		}
		return KindCharArray, false
	}
	return KindUnknown, false
}

// Host describes what libbpf reads on the host to resolve externs. The zero
// value reads the running kernel's.
type Host struct {
	// Config is the kernel config ("CONFIG_X=y" lines); nil reads
	// /boot/config-$(uname -r), else /proc/config.gz, when a CONFIG_
	// extern needs it.
	Config []byte
	// KernelVersion is LINUX_KERNEL_VERSION; 0 computes it as libbpf's
	// get_kernel_version.
	KernelVersion uint32
	// HasBPFCookie and HasSyscallWrapper are LINUX_HAS_BPF_COOKIE and
	// LINUX_HAS_SYSCALL_WRAPPER; nil probes the running kernel.
	HasBPFCookie, HasSyscallWrapper func() bool
}

// Values returns the contents of the .kconfig section: every extern's
// value as libbpf sets it, zero for an unresolved __weak one. An unresolved
// strong extern, a value its type cannot hold or an unknown LINUX_ extern
// is an error naming it.
func (e *Externs) Values(h Host) ([]byte, error) {
	data := make([]byte, e.datasec.Size)
	set := make(map[string]bool)
	needConfig := false
	for _, x := range e.Vars {
		var v uint64
		switch {
		case strings.HasPrefix(x.Name, "CONFIG_"):
			needConfig = true
			continue
		case x.Name == "LINUX_KERNEL_VERSION":
			v = uint64(h.KernelVersion)
			if v == 0 {
				kv, err := kernelVersion()
				if err != nil {
					return nil, fmt.Errorf("extern (kcfg) %s: %w", x.Name, err)
				}
				v = uint64(kv)
			}
		case x.Name == "LINUX_HAS_BPF_COOKIE":
			v = boolValue(h.HasBPFCookie, hasBPFCookie)
		case x.Name == "LINUX_HAS_SYSCALL_WRAPPER":
			v = boolValue(h.HasSyscallWrapper, hasSyscallWrapper)
		case !strings.HasPrefix(x.Name, "LINUX_") || !x.Weak:
			return nil, fmt.Errorf("extern (kcfg) %s: unrecognized virtual extern", x.Name)
		default:
			continue // an unknown __weak LINUX_ extern: zero
		}
		if err := x.setNum(data, v); err != nil {
			return nil, err
		}
		set[x.Name] = true
	}
	if needConfig {
		cfg := h.Config
		if cfg == nil {
			var err error
			if cfg, err = hostConfig(); err != nil {
				return nil, err
			}
		}
		if err := e.applyConfig(data, cfg, set); err != nil {
			return nil, err
		}
	}
	for _, x := range e.Vars {
		if !set[x.Name] && !x.Weak {
			return nil, fmt.Errorf("extern (kcfg) %s (strong): not resolved: the kernel config does not set it", x.Name)
		}
	}
	return data, nil
}

func boolValue(f, probe func() bool) uint64 {
	if f == nil {
		f = probe
	}
	if f() {
		return 1
	}
	return 0
}

// applyConfig is bpf_object__process_kconfig_line over cfg.
func (e *Externs) applyConfig(data, cfg []byte, set map[string]bool) error {
	byName := make(map[string]Extern, len(e.Vars))
	for _, x := range e.Vars {
		byName[x.Name] = x
	}
	for _, line := range strings.Split(string(cfg), "\n") {
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("kernel config: %q: no separator", line)
		}
		if value == "" {
			return fmt.Errorf("kernel config: %q: no value", line)
		}
		x, ok := byName[name]
		if !ok || set[name] {
			continue
		}
		var err error
		switch value[0] {
		case 'y', 'n', 'm':
			err = x.setTri(data, value[0])
		case '"':
			err = x.setString(data, value)
		default:
			var n uint64
			n, err = strconv.ParseUint(value, 0, 64)
			if err != nil {
				// strtoull takes a leading '-' and negates.
				if s, serr := strconv.ParseInt(value, 0, 64); serr == nil {
					n, err = uint64(s), nil
				}
			}
			if err != nil {
				return fmt.Errorf("extern (kcfg) %s: value %q isn't a valid integer", name, value)
			}
			if x.Kind != KindInt && x.Kind != KindChar {
				return fmt.Errorf("extern (kcfg) %s: value %q implies integer type, not %s", name, value, x.Kind)
			}
			err = x.setNum(data, n)
		}
		if err != nil {
			return err
		}
		set[name] = true
	}
	return nil
}

func (x Extern) setTri(data []byte, v byte) error {
	p := data[x.Offset : x.Offset+x.Size]
	switch x.Kind {
	case KindBool:
		if v == 'm' {
			return fmt.Errorf("extern (kcfg) %s: value 'm' implies tristate or char type", x.Name)
		}
		p[0] = b2u(v == 'y')
	case KindTristate:
		tri := map[byte]uint64{'n': 0, 'y': 1, 'm': 2}[v]
		putUint(p, tri)
	case KindChar:
		p[0] = v
	default:
		return fmt.Errorf("extern (kcfg) %s: value '%c' implies bool, tristate, or char type, not %s", x.Name, v, x.Kind)
	}
	return nil
}

func (x Extern) setString(data []byte, v string) error {
	if x.Kind != KindCharArray {
		return fmt.Errorf("extern (kcfg) %s: value %s implies char array type, not %s", x.Name, v, x.Kind)
	}
	if len(v) < 2 || v[len(v)-1] != '"' {
		return fmt.Errorf("extern (kcfg) %s: invalid string config %s", x.Name, v)
	}
	s := v[1 : len(v)-1]
	if len(s) >= int(x.Size) {
		s = s[:x.Size-1] // truncated, as libbpf does
	}
	p := data[x.Offset : x.Offset+x.Size]
	copy(p, s)
	p[len(s)] = 0
	return nil
}

func (x Extern) setNum(data []byte, v uint64) error {
	if x.Kind != KindInt && x.Kind != KindChar && x.Kind != KindBool {
		return fmt.Errorf("extern (kcfg) %s: value %d implies integer, char, or boolean type, not %s", x.Name, v, x.Kind)
	}
	if x.Kind == KindBool && v > 1 {
		return fmt.Errorf("extern (kcfg) %s: value %d isn't boolean compatible", x.Name, v)
	}
	if bits := x.Size * 8; x.Size < 8 {
		if x.Signed && v+(1<<(bits-1)) >= 1<<bits || !x.Signed && v>>bits != 0 {
			return fmt.Errorf("extern (kcfg) %s: value %d doesn't fit in %d bytes", x.Name, v, x.Size)
		}
	}
	putUint(data[x.Offset:x.Offset+x.Size], v)
	return nil
}

func putUint(p []byte, v uint64) {
	switch len(p) {
	case 1:
		p[0] = byte(v)
	case 2:
		binary.NativeEndian.PutUint16(p, uint16(v))
	case 4:
		binary.NativeEndian.PutUint32(p, uint32(v))
	case 8:
		binary.NativeEndian.PutUint64(p, v)
	}
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// hostConfig reads the running kernel's config as libbpf does.
func hostConfig() ([]byte, error) {
	release, _, err := uname()
	if err != nil {
		return nil, err
	}
	if data, err := os.ReadFile("/boot/config-" + release); err == nil {
		return data, nil
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return nil, fmt.Errorf("kernel config: neither /boot/config-%s nor /proc/config.gz: %w", release, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("kernel config: /proc/config.gz: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("kernel config: /proc/config.gz: %w", err)
	}
	return data, nil
}

// KernelVersion computes LINUX_KERNEL_VERSION as libbpf's
// get_kernel_version: from /proc/version_signature on Ubuntu, from the
// "Debian X.Y.Z" in uname's version on Debian, else from uname's release;
// the patch level is capped at 255 (KERNEL_VERSION).
func KernelVersion(release, version, ubuntuSignature string) (uint32, error) {
	var a, b, c uint32
	if ubuntuSignature != "" {
		// "Ubuntu 5.15.0-91.101-generic 5.15.131"
		f := strings.Fields(ubuntuSignature)
		if len(f) >= 3 {
			if n, _ := fmt.Sscanf(f[2], "%d.%d.%d", &a, &b, &c); n == 3 {
				return kv(a, b, c), nil
			}
		}
	}
	if i := strings.Index(version, "Debian "); i >= 0 {
		if n, _ := fmt.Sscanf(version[i:], "Debian %d.%d.%d", &a, &b, &c); n == 3 {
			return kv(a, b, c), nil
		}
	}
	if n, _ := fmt.Sscanf(release, "%d.%d.%d", &a, &b, &c); n == 3 {
		return kv(a, b, c), nil
	}
	return 0, fmt.Errorf("cannot tell the kernel version from release %q", release)
}

func kv(a, b, c uint32) uint32 { return a<<16 + b<<8 + min(c, 255) }

func kernelVersion() (uint32, error) {
	release, version, err := uname()
	if err != nil {
		return 0, err
	}
	sig, _ := os.ReadFile("/proc/version_signature")
	return KernelVersion(release, version, strings.TrimSpace(string(sig)))
}

// Apply rewrites every load of an extern in spec's programs into a load
// from the map MapName, which it adds to spec.Maps holding data (from
// Values): a read-only (for programs), frozen array of one element whose
// value type is the .kconfig section.
func (e *Externs) Apply(spec *ebpf.CollectionSpec, data []byte) error {
	offsets := make(map[string]uint32, len(e.Vars))
	for _, x := range e.Vars {
		offsets[x.Name] = x.Offset
	}
	used := false
	for name, ps := range spec.Programs {
		insns := ps.Instructions
		var fn string
		var start asm.RawInstructionOffset
		iter := insns.Iterate()
		for iter.Next() {
			ins := iter.Ins
			if sym := ins.Symbol(); sym != "" {
				fn, start = sym, iter.Offset
			}
			if !ins.OpCode.IsDWordLoad() || ins.Src != asm.PseudoMapValue || ins.Reference() != "" || ins.Map() != nil {
				continue
			}
			ext, ok := e.refs[insRef{fn, iter.Offset - start}]
			if !ok {
				continue
			}
			n := asm.LoadMapValue(ins.Dst, 0, offsets[ext]).WithReference(MapName)
			n.Offset = ins.Offset
			if src := ins.Source(); src != nil {
				n = n.WithSource(src)
			}
			if ins.Symbol() != "" {
				n = n.WithSymbol(ins.Symbol())
			}
			if f := btf.FuncMetadata(ins); f != nil {
				n = btf.WithFuncMetadata(n, f)
			}
			if r := btf.CORERelocationMetadata(ins); r != nil {
				n = btf.WithCORERelocationMetadata(n, r)
			}
			insns[iter.Index] = n
			used = true
		}
		// Any extern load left would take cilium/ebpf's own path.
		for i := range insns {
			ins := &insns[i]
			if ins.OpCode.IsDWordLoad() && ins.Src == asm.PseudoMapValue && ins.Reference() == "" && ins.Map() == nil {
				return fmt.Errorf("program %s: instruction %d loads a .kconfig extern bpfarm could not map", name, i)
			}
		}
	}
	if !used {
		return nil
	}
	if _, ok := spec.Maps[MapName]; ok {
		return fmt.Errorf("the object already has a map named %s", MapName)
	}
	spec.Maps[MapName] = &ebpf.MapSpec{
		Name:       MapName,
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  e.datasec.Size,
		MaxEntries: 1,
		Flags:      bpfFRdonlyProg,
		Key:        &btf.Int{Size: 4},
		Value:      e.datasec,
		Contents:   []ebpf.MapKV{{Key: uint32(0), Value: data}},
	}
	return nil
}

// bpfFRdonlyProg is BPF_F_RDONLY_PROG: programs may only read the map
// (cilium/ebpf freezes such maps once filled).
const bpfFRdonlyProg = 1 << 7
