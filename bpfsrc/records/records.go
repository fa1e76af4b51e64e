// Package records finds the type of the records BPF programs write into
// their ring buffers and perf event arrays.
//
// A program declares it with BPFARM_RECORD(map, type) from the farm's
// <bpfarm.h> (a pointer to the type in the ".bpfarm.records" section, which
// exists only in BTF), or the type is inferred from the program's
// instructions: every call of bpf_ringbuf_output, bpf_ringbuf_reserve and
// bpf_perf_event_output is found, with the map it targets, the size it
// passes when that is a constant, and the type of the data pointer when the
// pointer is a map value or a global variable; else the struct of that size.
// A map whose calls disagree, or whose size matches no struct or several,
// has no record type, and the reason says why.
package records

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Section is the ELF section of BPFARM_RECORD declarations, and Prefix the
// prefix of their variables' names (the map's name follows).
const (
	Section = ".bpfarm.records"
	Prefix  = "__bpfarm_record__"
)

// Origin says where a record type comes from.
type Origin string

// Origins.
const (
	// Declared: BPFARM_RECORD names it.
	Declared Origin = "declared"
	// Inferred: from the program's output calls.
	Inferred Origin = "inferred"
)

// Record is what the object says about the records of one ring buffer or
// perf event array.
type Record struct {
	// Map is the map's name.
	Map string
	// MapType is ebpf.RingBuf or ebpf.PerfEventArray.
	MapType ebpf.MapType
	// Type is the records' type, or nil if it is unknown.
	Type btf.Type
	// Origin is where Type comes from ("" when Type is nil).
	Origin Origin
	// Reason says how Type was inferred, or why there is none.
	Reason string
}

// Outputs reports whether maps of type t carry records (ring buffers and
// perf event arrays).
func Outputs(t ebpf.MapType) bool {
	return t == ebpf.RingBuf || t == ebpf.PerfEventArray
}

// call is one output call found in a program.
type call struct {
	prog   string
	helper string
	size   int64    // -1: not a constant
	typ    btf.Type // the data pointer's type, or nil
	from   string   // what typ comes from
}

// Find returns the record type of each ring buffer and perf event array of
// spec, by map name.
func Find(spec *ebpf.CollectionSpec) map[string]*Record {
	out := make(map[string]*Record)
	for name, ms := range spec.Maps {
		if Outputs(ms.Type) {
			out[name] = &Record{Map: name, MapType: ms.Type}
		}
	}
	if len(out) == 0 {
		return out
	}

	declared, mapDefs := declarations(spec)
	owned := ownTypes(spec)
	calls := make(map[string][]call)
	for _, pname := range sortedKeys(spec.Programs) {
		ps := spec.Programs[pname]
		for _, c := range findCalls(pname, ps.Instructions, spec) {
			calls[c.mapName] = append(calls[c.mapName], c.call)
		}
	}

	for name, r := range out {
		if t, ok := declared[name]; ok {
			r.Type, r.Origin = t, Declared
			r.Reason = "BPFARM_RECORD(" + name + ", " + typeName(t) + ")"
			continue
		}
		infer(r, calls[name], spec.Types, owned, mapDefs)
	}
	return out
}

// declarations returns the BPFARM_RECORD declarations of spec, by map, and
// the structs that define maps (in ".maps"), which are no records.
func declarations(spec *ebpf.CollectionSpec) (map[string]btf.Type, map[btf.Type]bool) {
	out := make(map[string]btf.Type)
	defs := make(map[btf.Type]bool)
	if spec.Types == nil {
		return out, defs
	}
	for t, err := range spec.Types.All() {
		if err != nil {
			break
		}
		ds, ok := t.(*btf.Datasec)
		if ok && ds.Name == ".maps" {
			for _, vs := range ds.Vars {
				if v, ok := vs.Type.(*btf.Var); ok {
					defs[btf.UnderlyingType(v.Type)] = true
				}
			}
		}
		if !ok || ds.Name != Section {
			continue
		}
		for _, vs := range ds.Vars {
			v, ok := vs.Type.(*btf.Var)
			if !ok || !strings.HasPrefix(v.Name, Prefix) {
				continue
			}
			ptr, ok := btf.UnderlyingType(v.Type).(*btf.Pointer)
			if !ok {
				continue
			}
			out[strings.TrimPrefix(v.Name, Prefix)] = unqualified(ptr.Target)
		}
	}
	return out, defs
}

// infer sets r's type from the output calls that target it.
func infer(r *Record, calls []call, types *btf.Spec, owned []btf.Type, mapDefs map[btf.Type]bool) {
	if len(calls) == 0 {
		r.Reason = "no program writes to it (no bpf_ringbuf_output, bpf_ringbuf_reserve or bpf_perf_event_output call targets it)"
		return
	}
	var found btf.Type
	var how []string
	for _, c := range calls {
		t, why := callType(c, types, owned, mapDefs)
		if t == nil {
			r.Reason = why + "; declare it with BPFARM_RECORD(" + r.Map + ", TYPE) from <bpfarm.h>"
			return
		}
		if found != nil && !sameType(found, t) {
			r.Reason = fmt.Sprintf("ambiguous: %s writes %s, another call %s; declare it with BPFARM_RECORD(%s, TYPE) from <bpfarm.h>",
				c.prog, typeName(t), typeName(found), r.Map)
			return
		}
		found = t
		how = append(how, c.prog+": "+why)
	}
	slices.Sort(how)
	r.Type, r.Origin = found, Inferred
	r.Reason = strings.Join(slices.Compact(how), "; ")
}

// callType returns the record type one call writes, and how it was found
// (or why it was not).
func callType(c call, types *btf.Spec, owned []btf.Type, mapDefs map[btf.Type]bool) (btf.Type, string) {
	if c.typ != nil {
		size, err := btf.Sizeof(c.typ)
		if err == nil && (c.size < 0 || int64(size) == c.size) {
			return c.typ, fmt.Sprintf("%s of %s (%s)", c.helper, typeName(c.typ), c.from)
		}
	}
	if c.size < 0 {
		return nil, fmt.Sprintf("%s in %s passes a size that is not a constant", c.helper, c.prog)
	}
	if types == nil {
		return nil, "the object has no BTF"
	}
	// Prefer the program's own types (map values, globals) over the
	// kernel types its BTF also holds.
	match := bySize(owned, c.size, nil)
	if len(match) != 1 {
		var all []btf.Type
		for t, err := range types.All() {
			if err != nil {
				break
			}
			all = append(all, t)
		}
		match = bySize(all, c.size, mapDefs)
	}
	switch len(match) {
	case 0:
		return nil, fmt.Sprintf("%s in %s writes %d bytes and no struct of that size is in the object's BTF (a type used only by local variables is not)", c.helper, c.prog, c.size)
	case 1:
		return match[0], fmt.Sprintf("%s of %d bytes, the size of %s", c.helper, c.size, typeName(match[0]))
	}
	names := make([]string, 0, len(match))
	for _, t := range match {
		names = append(names, typeName(t))
	}
	sort.Strings(names)
	return nil, fmt.Sprintf("ambiguous: %s in %s writes %d bytes, the size of %s", c.helper, c.prog, c.size, strings.Join(names, ", "))
}

// bySize returns the named structs of types with size bytes, but those in
// skip.
func bySize(types []btf.Type, size int64, skip map[btf.Type]bool) []btf.Type {
	var out []btf.Type
	seen := make(map[btf.Type]bool)
	for _, t := range types {
		s, ok := btf.UnderlyingType(t).(*btf.Struct)
		if ok && s.Name != "" && int64(s.Size) == size && !skip[s] && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ownTypes returns the types of spec's map keys and values and global
// variables: the types the program defines, as opposed to the kernel's.
func ownTypes(spec *ebpf.CollectionSpec) []btf.Type {
	var out []btf.Type
	for _, name := range sortedKeys(spec.Maps) {
		ms := spec.Maps[name]
		if ds, ok := ms.Value.(*btf.Datasec); ok {
			for _, vs := range ds.Vars {
				if v, ok := vs.Type.(*btf.Var); ok {
					out = append(out, v.Type)
				}
			}
			continue
		}
		for _, t := range []btf.Type{ms.Key, ms.Value} {
			if t != nil {
				out = append(out, t)
			}
		}
	}
	return out
}

// unqualified strips const, volatile and restrict from t (typedefs stay:
// they name the type).
func unqualified(t btf.Type) btf.Type {
	for {
		switch q := t.(type) {
		case *btf.Const:
			t = q.Type
		case *btf.Volatile:
			t = q.Type
		case *btf.Restrict:
			t = q.Type
		case *btf.TypeTag:
			t = q.Type
		default:
			return t
		}
	}
}

// sameType reports whether a and b are the same type (or same-named
// structs of the same size).
func sameType(a, b btf.Type) bool {
	if a == b {
		return true
	}
	ua, ub := btf.UnderlyingType(a), btf.UnderlyingType(b)
	if ua == ub {
		return true
	}
	sa, _ := btf.Sizeof(ua)
	sb, _ := btf.Sizeof(ub)
	return sa == sb && typeName(ua) == typeName(ub) && typeName(ua) != ""
}

// typeName is a C-like name of t.
func typeName(t btf.Type) string {
	switch t := t.(type) {
	case *btf.Struct:
		return "struct " + t.Name
	case *btf.Union:
		return "union " + t.Name
	case *btf.Typedef:
		return t.Name
	case *btf.Const:
		return typeName(t.Type)
	case *btf.Volatile:
		return typeName(t.Type)
	case *btf.Array:
		return fmt.Sprintf("%s[%d]", typeName(t.Type), t.Nelems)
	}
	if t == nil {
		return "void"
	}
	return t.TypeName()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// regKind is what the scan knows about a register.
type regKind uint8

const (
	regUnknown  regKind = iota
	regMap              // a map pointer: name
	regConst            // a constant: value
	regMapValue         // a pointer into a map's value: name, value (offset)
)

type reg struct {
	kind  regKind
	name  string
	value int64
}

// mappedCall is a call and the map it targets.
type mappedCall struct {
	mapName string
	call
}

// findCalls scans insns once in order, tracking what each register last
// held (forgotten at function entries; branches are not followed, which is
// enough for the code clang emits around helper calls, and a wrong guess
// is caught by the size check), and returns the output calls whose map it
// knows.
func findCalls(prog string, insns asm.Instructions, spec *ebpf.CollectionSpec) []mappedCall {
	var regs [11]reg
	var out []mappedCall
	iter := insns.Iterate()
	for iter.Next() {
		ins := iter.Ins
		if ins.Symbol() != "" {
			regs = [11]reg{}
		}
		dst := int(ins.Dst)
		switch {
		case ins.IsLoadFromMap() && ins.Src == asm.PseudoMapFD:
			regs[dst] = reg{kind: regMap, name: ins.Reference()}
		case ins.IsLoadFromMap() && ins.Src == asm.PseudoMapValue:
			regs[dst] = reg{kind: regMapValue, name: ins.Reference(), value: int64(uint64(ins.Constant) >> 32)}
		case ins.IsBuiltinCall():
			fn := asm.BuiltinFunc(ins.Constant)
			if c, ok := outputCall(prog, fn, &regs, spec); ok {
				out = append(out, c)
			}
			r1 := regs[1]
			for i := 0; i <= 5; i++ {
				regs[i] = reg{}
			}
			if fn == asm.FnMapLookupElem && r1.kind == regMap {
				regs[0] = reg{kind: regMapValue, name: r1.name}
			}
		case ins.OpCode.Class().IsJump():
			if ins.OpCode.JumpOp() == asm.Call {
				for i := 0; i <= 5; i++ {
					regs[i] = reg{}
				}
			}
		case ins.OpCode.Class().IsALU() && dst < len(regs):
			src := ins.OpCode.Source()
			switch ins.OpCode.ALUOp() {
			case asm.Mov:
				if src == asm.ImmSource {
					regs[dst] = reg{kind: regConst, value: ins.Constant}
				} else if int(ins.Src) < len(regs) {
					regs[dst] = regs[ins.Src]
				}
			case asm.Add:
				if src == asm.ImmSource && (regs[dst].kind == regMapValue || regs[dst].kind == regConst) {
					regs[dst].value += ins.Constant
				} else {
					regs[dst] = reg{}
				}
			default:
				regs[dst] = reg{}
			}
		case ins.OpCode.Class().IsLoad() && dst < len(regs):
			regs[dst] = reg{}
		}
	}
	return out
}

// outputCall describes a call of fn if it is an output helper whose map
// register is known.
func outputCall(prog string, fn asm.BuiltinFunc, regs *[11]reg, spec *ebpf.CollectionSpec) (mappedCall, bool) {
	var mapReg, dataReg, sizeReg int
	switch fn {
	case asm.FnRingbufOutput:
		mapReg, dataReg, sizeReg = 1, 2, 3
	case asm.FnRingbufReserve:
		mapReg, dataReg, sizeReg = 1, -1, 2
	case asm.FnPerfEventOutput:
		mapReg, dataReg, sizeReg = 2, 4, 5
	default:
		return mappedCall{}, false
	}
	m := regs[mapReg]
	if m.kind != regMap {
		return mappedCall{}, false
	}
	c := call{prog: prog, helper: helperName(fn), size: -1}
	if s := regs[sizeReg]; s.kind == regConst {
		c.size = s.value
	}
	if dataReg >= 0 {
		if d := regs[dataReg]; d.kind == regMapValue {
			c.typ, c.from = valueType(spec, d.name, d.value)
			c.typ = unqualified(c.typ)
		}
	}
	return mappedCall{mapName: m.name, call: c}, true
}

// valueType returns the type at offset off of map name's value: the
// value type of a map (at offset 0), or the global variable at off of a
// data section.
func valueType(spec *ebpf.CollectionSpec, name string, off int64) (btf.Type, string) {
	ms, ok := spec.Maps[name]
	if !ok || ms.Value == nil {
		return nil, ""
	}
	if ds, ok := ms.Value.(*btf.Datasec); ok {
		for _, vs := range ds.Vars {
			if v, ok := vs.Type.(*btf.Var); ok && int64(vs.Offset) == off {
				return v.Type, "the global " + v.Name
			}
		}
		return nil, ""
	}
	if off != 0 {
		return nil, ""
	}
	return ms.Value, "a value of the map " + name
}

// helperName is the C name of an output helper.
func helperName(fn asm.BuiltinFunc) string {
	switch fn {
	case asm.FnRingbufOutput:
		return "bpf_ringbuf_output"
	case asm.FnRingbufReserve:
		return "bpf_ringbuf_reserve"
	case asm.FnPerfEventOutput:
		return "bpf_perf_event_output"
	}
	return fn.String()
}
