// Package inspect reports what a compiled BPF ELF object contains: its
// programs, maps, global variables, license and CO-RE relocations, and finds
// problems that would make the object fail to load (Check).
//
// It parses objects with cilium/ebpf's ELF reader and never loads anything
// into the kernel.
package inspect

import (
	"bytes"
	"cmp"
	"debug/elf"
	"errors"
	"fmt"
	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/bpfsrc/records"
	"github.com/bpfarm/bpfarm/client/decode"
	"github.com/bpfarm/bpfarm/internal/objname"
)

// Object is what the farm reports about a compiled BPF ELF object.
type Object struct {
	// License is the contents of the object's "license" section, or "" if
	// it has none.
	License string `json:"license"`
	// Programs are the object's BPF programs, sorted by name.
	Programs []Program `json:"programs"`
	// Maps are the object's maps, sorted by name. The maps the loader
	// creates internally for global data sections (.rodata, .data, .bss,
	// .kconfig, ...) are not listed; their variables are in Globals.
	Maps []Map `json:"maps"`
	// Globals are the object's global variables, sorted by section and
	// offset.
	Globals []Global `json:"globals"`
	// CORERelocations is the sum of the programs' CO-RE relocations (a
	// subprogram called by several programs counts once for each).
	CORERelocations int `json:"core_relocations"`
	// BTF reports whether the object carries BTF type information
	// (compiled with -g).
	BTF bool `json:"btf"`
}

// Program is one BPF program of an Object.
type Program struct {
	// Name is the name of the program's C function.
	Name string `json:"name"`
	// Section is the ELF section the program lives in, e.g.
	// "tp/sched/sched_process_exec".
	Section string `json:"section"`
	// Type is the program type as named by cilium/ebpf, e.g. "TracePoint".
	Type string `json:"type"`
	// AttachType is the attach type as named by cilium/ebpf, e.g.
	// "TraceRawTp", or "" if the section implies none.
	AttachType string `json:"attach_type,omitempty"`
	// AttachTo is the hook the section names, e.g. "sched/sched_switch".
	AttachTo string `json:"attach_to,omitempty"`
	// Instructions is the number of instructions, including the
	// subprograms the program calls. A 64-bit immediate load counts as one.
	Instructions int `json:"instructions"`
	// CORERelocations is the number of CO-RE relocations in the program.
	CORERelocations int `json:"core_relocations"`
	// Helpers are the names of the BPF helpers the program calls, sorted.
	Helpers []string `json:"helpers"`
	// Kfuncs are the names of the kernel functions the program calls,
	// sorted.
	Kfuncs []string `json:"kfuncs"`
}

// Map is one map definition of an Object.
type Map struct {
	// Name is the map's symbol name.
	Name string `json:"name"`
	// Type is the map type as named by cilium/ebpf, e.g. "RingBuf".
	Type       string `json:"type"`
	KeySize    uint32 `json:"key_size"`
	ValueSize  uint32 `json:"value_size"`
	MaxEntries uint32 `json:"max_entries"`
	Flags      uint32 `json:"flags"`
	// Pinning is "by_name" for maps declared with LIBBPF_PIN_BY_NAME and
	// "" otherwise.
	Pinning string `json:"pinning,omitempty"`
	// KeyType and ValueType are C names of the key and value types from
	// BTF ("" without BTF, and for ring buffers and perf event arrays).
	KeyType   string `json:"key_type,omitempty"`
	ValueType string `json:"value_type,omitempty"`
	// Record describes the records of a ring buffer or perf event array
	// (nil for other maps).
	Record *Record `json:"record,omitempty"`
	// Export is how the map can be exported as metrics: "histogram" (its
	// values are log2 histograms), "counter" (its values are numbers or
	// structs of numbers), or "" when it cannot be (ExportNote says why).
	Export     string `json:"export,omitempty"`
	ExportNote string `json:"export_note,omitempty"`
}

// Record is the type of the records a program writes into a ring buffer
// or perf event array.
type Record struct {
	// Type is the C name of the records' type, e.g. "struct event", or ""
	// when it is unknown (records are then shown undecoded).
	Type string `json:"type,omitempty"`
	// Size is the type's size in bytes.
	Size int `json:"size,omitempty"`
	// Origin is "declared" (BPFARM_RECORD from <bpfarm.h>) or "inferred"
	// (from the programs' output calls), or "" when Type is unknown.
	Origin string `json:"origin,omitempty"`
	// Note says how the type was inferred, or why it is unknown.
	Note string `json:"note"`
}

// Global is one global variable of an Object.
type Global struct {
	// Name is the variable's symbol name.
	Name string `json:"name"`
	// Section is the data section holding the variable: .rodata, .data,
	// .bss or a custom .rodata.NAME / .data.NAME section.
	Section string `json:"section"`
	// Offset is the variable's offset within Section.
	Offset uint32 `json:"offset"`
	// Size is the variable's size in bytes.
	Size uint32 `json:"size"`
	// Type is a C-like name of the variable's type, without qualifiers,
	// e.g. "u32", "char[16]" or "struct config". It is "" if the object
	// has no BTF.
	Type string `json:"type"`
	// Const reports whether the variable is in a read-only section
	// (.rodata*): such a variable can be set before the object is loaded
	// and is a constant to the verifier afterwards.
	Const bool `json:"const"`
}

// Inspect parses the BPF ELF object obj and reports its contents.
func Inspect(obj []byte) (*Object, error) {
	spec, _, err := kconfig.LoadSpec(obj)
	if err != nil {
		return nil, fmt.Errorf("inspect object: %w", err)
	}
	// Names end up in the agents' pin paths: refuse any that is not a C
	// identifier (an asm label can be "../../x").
	if err := objname.CheckAll(spec.Programs, spec.Maps); err != nil {
		return nil, err
	}
	license, err := readLicense(obj)
	if err != nil {
		return nil, fmt.Errorf("inspect object: %w", err)
	}

	o := &Object{
		License:  license,
		Programs: []Program{},
		Maps:     []Map{},
		Globals:  []Global{},
		BTF:      spec.Types != nil,
	}

	for name, ps := range spec.Programs {
		p := inspectProgram(name, ps)
		o.CORERelocations += p.CORERelocations
		o.Programs = append(o.Programs, p)
	}
	slices.SortFunc(o.Programs, func(a, b Program) int { return strings.Compare(a.Name, b.Name) })

	recs := records.Find(spec)
	for name, ms := range spec.Maps {
		if isInternalMap(name) {
			continue
		}
		m := Map{
			Name:       name,
			Type:       ms.Type.String(),
			KeySize:    ms.KeySize,
			ValueSize:  ms.ValueSize,
			MaxEntries: ms.MaxEntries,
			Flags:      ms.Flags,
		}
		if ms.Pinning == ebpf.PinByName {
			m.Pinning = "by_name"
		}
		describeMap(&m, ms, recs[name])
		o.Maps = append(o.Maps, m)
	}
	slices.SortFunc(o.Maps, func(a, b Map) int { return strings.Compare(a.Name, b.Name) })

	for name, vs := range spec.Variables {
		g := Global{
			Name:    name,
			Section: vs.SectionName,
			Offset:  vs.Offset,
			Size:    vs.Size(),
			Const:   vs.Constant(),
		}
		if vs.Type != nil {
			g.Type = typeName(vs.Type.Type)
		}
		o.Globals = append(o.Globals, g)
	}
	slices.SortFunc(o.Globals, func(a, b Global) int {
		if c := strings.Compare(a.Section, b.Section); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Offset, b.Offset); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})

	return o, nil
}

// describeMap fills in m's types, record type and exportability.
func describeMap(m *Map, ms *ebpf.MapSpec, rec *records.Record) {
	if ms.Key != nil {
		m.KeyType = decode.TypeName(ms.Key)
	}
	if ms.Value != nil {
		m.ValueType = decode.TypeName(ms.Value)
	}
	if rec != nil {
		m.Record = &Record{Origin: string(rec.Origin), Note: rec.Reason}
		if rec.Type != nil {
			m.Record.Type = decode.TypeName(rec.Type)
			if size, err := btf.Sizeof(rec.Type); err == nil {
				m.Record.Size = size
			}
		}
		m.ExportNote = "a stream of records, not a table"
		return
	}
	m.Export, m.ExportNote = exportKind(ms)
}

// exportKind says how a map can be exported as metrics, or why not. It
// applies the rules of the agent's exporter (client/export.NewPlan, which
// this package cannot import): a log2 histogram value (slots[]) exports
// as a histogram; a value with a numeric field (structs flattened; char
// arrays and enums are labels, other arrays are skipped) as counters.
func exportKind(ms *ebpf.MapSpec) (string, string) {
	switch ms.Type {
	case ebpf.Hash, ebpf.Array, ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUHash, ebpf.LRUCPUHash:
	default:
		return "", ms.Type.String() + " maps are not exported"
	}
	if ms.Key == nil || ms.Value == nil {
		return "", "no BTF for its key and value"
	}
	kd, err := decode.New(ms.Key)
	if err != nil {
		return "", "key: " + err.Error()
	}
	for _, l := range kd.Leaves() {
		if l.Kind == decode.LeafHistogram {
			return "", "its key holds a log2 histogram, which cannot label series"
		}
	}
	d, err := decode.New(ms.Value)
	if err != nil {
		return "", "value: " + err.Error()
	}
	if d.Histogram() {
		return "histogram", ""
	}
	for _, l := range d.Leaves() {
		if l.Kind == decode.LeafNumber {
			return "counter", ""
		}
	}
	return "", "its value " + decode.TypeName(ms.Value) + " has no numeric field"
}

// inspectProgram summarises one program spec.
func inspectProgram(name string, ps *ebpf.ProgramSpec) Program {
	p := Program{
		Name:         name,
		Section:      ps.SectionName,
		Type:         ps.Type.String(),
		AttachTo:     ps.AttachTo,
		Instructions: len(ps.Instructions),
		Helpers:      []string{},
		Kfuncs:       []string{},
	}
	// AttachNone is an alias of AttachCGroupInetIngress: only report it
	// where it means something.
	if ps.AttachType != ebpf.AttachNone || ps.Type == ebpf.CGroupSKB {
		p.AttachType = ps.AttachType.String()
	}

	for i := range ps.Instructions {
		ins := &ps.Instructions[i]
		if btf.CORERelocationMetadata(ins) != nil {
			p.CORERelocations++
		}
		switch {
		case ins.IsBuiltinCall():
			p.Helpers = append(p.Helpers, helperName(asm.BuiltinFunc(ins.Constant)))
		case ins.IsKfuncCall():
			if ref := ins.Reference(); ref != "" {
				p.Kfuncs = append(p.Kfuncs, ref)
			} else {
				p.Kfuncs = append(p.Kfuncs, fmt.Sprintf("kfunc#%d", ins.Constant))
			}
		}
	}
	slices.Sort(p.Helpers)
	p.Helpers = slices.Compact(p.Helpers)
	slices.Sort(p.Kfuncs)
	p.Kfuncs = slices.Compact(p.Kfuncs)
	return p
}

// isInternalMap reports whether a map of a CollectionSpec is one the loader
// synthesises for a data section (.rodata, .bss, .kconfig, ...) rather than
// one the program declares.
func isInternalMap(name string) bool {
	return strings.HasPrefix(name, ".")
}

// readLicense returns the contents of obj's license section, like
// cilium/ebpf does for each program, so that objects without programs report
// a license too.
func readLicense(obj []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return "", fmt.Errorf("read ELF: %w", err)
	}
	defer f.Close()
	for _, sec := range f.Sections {
		if !strings.HasPrefix(sec.Name, "license") {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			return "", fmt.Errorf("read section %s: %w", sec.Name, err)
		}
		return string(bytes.TrimRight(data, "\x00")), nil
	}
	return "", nil
}

// Check reports the problems in o that make it unusable: each is a one-line
// error, and they are joined with errors.Join. It returns nil if there are
// none.
func (o *Object) Check() error {
	if len(o.Programs) == 0 {
		return errors.New(`object has no BPF programs: put each program in a SEC("...") section`)
	}

	var errs []error
	if !gplCompatible(o.License) {
		license := fmt.Sprintf("the license is %q", o.License)
		if o.License == "" {
			license = "the object has no license"
		}
		const fix = `declare char LICENSE[] SEC("license") = "GPL";`
		for _, p := range o.Programs {
			for _, h := range p.Helpers {
				if gplOnlyHelper(h, p.Type) {
					errs = append(errs, fmt.Errorf("program %q calls GPL-only helper %s but %s; %s", p.Name, h, license, fix))
				}
			}
			for _, k := range p.Kfuncs {
				errs = append(errs, fmt.Errorf("program %q calls kfunc %s, which requires a GPL-compatible license, but %s; %s", p.Name, k, license, fix))
			}
		}
	}
	return errors.Join(errs...)
}

// gplCompatible reports whether the kernel considers license compatible with
// the GPL, and so lets programs under it call GPL-only helpers and kfuncs.
//
// It mirrors license_is_gpl_compatible() in the kernel's
// include/linux/license.h.
func gplCompatible(license string) bool {
	switch license {
	case "GPL",
		"GPL v2",
		"GPL and additional rights",
		"Dual BSD/GPL",
		"Dual MIT/GPL",
		"Dual MPL/GPL":
		return true
	}
	return false
}
