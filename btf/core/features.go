package core

import (
	"debug/elf"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// This file decides whether a kernel has the BPF features a program needs:
// its map types, program type, attach type, helpers and kfuncs (and, in
// isa.go, the instruction set its instructions belong to). The
// answer comes from the kernel's own BTF, where the kernel describes its
// BPF ABI: enum bpf_map_type, enum bpf_prog_type, enum bpf_attach_type and
// enum bpf_func_id (built from __BPF_FUNC_MAPPER in older kernels, the
// enumerators are the same BPF_FUNC_* names), and the kfuncs' BTF_KIND_FUNC
// declarations (with the "bpf_kfunc" decl tag where pahole adds them).

// Need kinds.
const (
	NeedMapType     = "map_type"
	NeedProgramType = "program_type"
	NeedAttachType  = "attach_type"
	NeedHelper      = "helper"
)

// Need is a kernel feature a program needs, and whether the kernel has it.
type Need struct {
	// Kind is "map_type", "program_type", "attach_type", "helper" or
	// "instruction_set". (kfuncs are Targets of kind "kfunc".)
	Kind string `json:"kind"`
	// Name is the feature's UAPI name: BPF_MAP_TYPE_RINGBUF,
	// BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS, BPF_FUNC_ringbuf_output;
	// for an instruction set, "BPF ISA v4" (ISAv4).
	Name string `json:"name"`
	// Map is the map that needs a map type.
	Map string `json:"map,omitempty"`
	// Status is "present", "missing", or "unknown" (the kernel's BTF has no
	// such enum at all, or no mark of the instruction set, so it can't
	// tell).
	Status string `json:"status"`
	// Instructions are, for an instruction set, the program's first
	// instruction of each kind that needs it.
	Instructions []ISAInstruction `json:"instructions,omitempty"`
}

// Reason describes a missing need on one line, e.g. "map events: ring
// buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel".
func (n Need) Reason() string {
	switch n.Kind {
	case NeedMapType:
		return fmt.Sprintf("map %s: %s (%s) is not in this kernel", n.Map, describeEnum(n.Name, "BPF_MAP_TYPE_"), n.Name)
	case NeedProgramType:
		return fmt.Sprintf("program type %s (%s) is not in this kernel", describeEnum(n.Name, "BPF_PROG_TYPE_"), n.Name)
	case NeedAttachType:
		return fmt.Sprintf("attach type %s is not in this kernel", n.Name)
	case NeedHelper:
		return fmt.Sprintf("helper bpf_%s (%s) is not in this kernel", strings.TrimPrefix(n.Name, "BPF_FUNC_"), n.Name)
	case NeedInstructionSet:
		return isaReason(n.Name, n.Instructions)
	}
	return fmt.Sprintf("%s %s is not in this kernel", n.Kind, n.Name)
}

// enumDescriptions names the map and program types whose UAPI names don't
// read well once lower-cased.
var enumDescriptions = map[string]string{
	"BPF_MAP_TYPE_RINGBUF":           "ring buffer",
	"BPF_MAP_TYPE_USER_RINGBUF":      "user ring buffer",
	"BPF_MAP_TYPE_PERF_EVENT_ARRAY":  "perf event array",
	"BPF_MAP_TYPE_PERCPU_HASH":       "per-CPU hash",
	"BPF_MAP_TYPE_PERCPU_ARRAY":      "per-CPU array",
	"BPF_MAP_TYPE_LRU_PERCPU_HASH":   "LRU per-CPU hash",
	"BPF_MAP_TYPE_LRU_HASH":          "LRU hash",
	"BPF_MAP_TYPE_LPM_TRIE":          "LPM trie",
	"BPF_MAP_TYPE_SK_STORAGE":        "socket storage",
	"BPF_MAP_TYPE_INODE_STORAGE":     "inode storage",
	"BPF_MAP_TYPE_TASK_STORAGE":      "task storage",
	"BPF_MAP_TYPE_CGRP_STORAGE":      "cgroup storage",
	"BPF_MAP_TYPE_BLOOM_FILTER":      "bloom filter",
	"BPF_MAP_TYPE_ARENA":             "arena",
	"BPF_PROG_TYPE_SCHED_CLS":        "tc classifier",
	"BPF_PROG_TYPE_TRACING":          "tracing",
	"BPF_PROG_TYPE_LSM":              "LSM",
	"BPF_PROG_TYPE_STRUCT_OPS":       "struct_ops",
	"BPF_PROG_TYPE_NETFILTER":        "netfilter",
	"BPF_PROG_TYPE_SYSCALL":          "syscall",
	"BPF_PROG_TYPE_SK_LOOKUP":        "socket lookup",
	"BPF_PROG_TYPE_RAW_TRACEPOINT":   "raw tracepoint",
	"BPF_PROG_TYPE_CGROUP_SOCK_ADDR": "cgroup socket address",
}

// describeEnum renders a UAPI enumerator for people: "ring buffer" for
// BPF_MAP_TYPE_RINGBUF, "hash of maps" for BPF_MAP_TYPE_HASH_OF_MAPS.
func describeEnum(name, prefix string) string {
	if d, ok := enumDescriptions[name]; ok {
		return d
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", " ")
}

// enumIndex is one of the kernel's BPF enums: enumerator names by value.
// Nil when the kernel's BTF has no such enum.
type enumIndex map[uint32]string

// features is what a kernel's BTF says about its BPF ABI. Built once per
// parsed kernel (kernelState.features).
type features struct {
	mapTypes, progTypes, attachTypes, helpers enumIndex
	// isa says whether the kernel runs BPF ISA v4 instructions (isa.go).
	isa isaSupport
	// kfuncTags is set when the kernel's BTF marks its kfuncs with the
	// "bpf_kfunc" decl tag (pahole 1.27+ with decl_tag_kfuncs): a kfunc is
	// then present only if its FUNC carries the tag.
	kfuncTags bool
}

// kfuncDeclTag is the decl tag pahole puts on every registered kfunc.
const kfuncDeclTag = "bpf_kfunc"

// loadFeatures reads the BPF enums from a kernel's vmlinux BTF; kfuncTags
// and isa were read from its raw BTF.
func loadFeatures(vmlinux *btf.Spec, kfuncTags bool, isa isaSupport) (*features, error) {
	f := &features{kfuncTags: kfuncTags, isa: isa}
	for _, e := range []struct {
		name string
		dst  *enumIndex
	}{
		{"bpf_map_type", &f.mapTypes},
		{"bpf_prog_type", &f.progTypes},
		{"bpf_attach_type", &f.attachTypes},
		{"bpf_func_id", &f.helpers},
	} {
		types, err := vmlinux.AnyTypesByName(e.name)
		if errors.Is(err, btf.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("enum %s: %w", e.name, err)
		}
		for _, t := range types {
			enum, ok := t.(*btf.Enum)
			if !ok || len(enum.Values) == 0 {
				continue
			}
			idx := make(enumIndex, len(enum.Values))
			for _, v := range enum.Values {
				if !strings.HasPrefix(v.Name, "__") && v.Value <= 0xffffffff {
					if _, dup := idx[uint32(v.Value)]; !dup || !strings.HasSuffix(v.Name, "_DEPRECATED") {
						idx[uint32(v.Value)] = v.Name
					}
				}
			}
			if len(idx) > 0 {
				*e.dst = idx
			}
			break
		}
	}
	return f, nil
}

// features returns the kernel's BPF features, parsed once per kernel.
func (k *Kernel) features(st *kernelState) (*features, error) {
	if k.state == nil {
		// A Kernel not made by LoadKernel: parse every time (without the
		// raw BTF, the instruction set is unknown).
		return loadFeatures(k.VMLinux, false, isaSupport{})
	}
	st.featuresOnce.Do(func() {
		st.feats, st.featuresErr = loadFeatures(k.VMLinux, st.kfuncTags, st.isa)
		if st.featuresErr != nil {
			st.featuresErr = fmt.Errorf("kernel %s: %w", k.ID, st.featuresErr)
		}
	})
	return st.feats, st.featuresErr
}

// check reports whether idx has value; unknown when the kernel has no
// such enum.
func (idx enumIndex) check(v uint32) string {
	if idx == nil {
		return TargetUnknown
	}
	if _, ok := idx[v]; ok {
		return TargetPresent
	}
	return TargetMissing
}

// needReq is a feature a program needs, by its UAPI value.
type needReq struct {
	kind    string
	value   uint32
	name    string // UAPI name, or "" when this build doesn't know the value
	mapName string
	// insns are, for an instruction set, every instruction that needs it.
	insns []v4Insn
}

// optionalAttach lists the program and attach type pairs whose expected
// attach type libbpf and cilium/ebpf treat as optional
// (SEC_ATTACHABLE_OPT): kernels that predate the attach type load and
// attach such programs without it.
var optionalAttach = map[[2]ebpf.AttachType]bool{}

func init() {
	for _, p := range []struct {
		prog   ebpf.ProgramType
		attach []ebpf.AttachType
	}{
		{ebpf.XDP, []ebpf.AttachType{ebpf.AttachXDP}},
		{ebpf.SockOps, []ebpf.AttachType{ebpf.AttachCGroupSockOps}},
		{ebpf.SkSKB, []ebpf.AttachType{ebpf.AttachSkSKBStreamParser, ebpf.AttachSkSKBStreamVerdict, ebpf.AttachSkSKBVerdict}},
		{ebpf.SkMsg, []ebpf.AttachType{ebpf.AttachSkMsgVerdict}},
		{ebpf.LircMode2, []ebpf.AttachType{ebpf.AttachLircMode2}},
		{ebpf.FlowDissector, []ebpf.AttachType{ebpf.AttachFlowDissector}},
		{ebpf.CGroupSKB, []ebpf.AttachType{ebpf.AttachCGroupInetIngress, ebpf.AttachCGroupInetEgress}},
		{ebpf.CGroupSock, []ebpf.AttachType{ebpf.AttachCGroupInetSockCreate}},
		{ebpf.CGroupDevice, []ebpf.AttachType{ebpf.AttachCGroupDevice}},
	} {
		for _, a := range p.attach {
			optionalAttach[[2]ebpf.AttachType{ebpf.AttachType(p.prog), a}] = true
		}
	}
}

// programNeeds derives what a program needs from the kernel, as libbpf and
// cilium/ebpf load it:
//
//   - every map type of the object (the loader creates all of an object's
//     maps, whichever programs it loads), except the maps of globals
//     (.rodata, .data, .bss, .kconfig: arrays);
//   - its program type and its expected attach type, both from its ELF
//     section (cilium/ebpf's copy of libbpf's section table); the attach
//     type only when the section sets one that isn't optional;
//   - every helper it calls (call instructions with src_reg 0), by
//     BPF_FUNC_* value;
//   - the BPF ISA v4, when it has instructions of that version (raw holds
//     the raw offset of each instruction).
func programNeeds(ps *ebpf.ProgramSpec, insns asm.Instructions, raw []int, objMaps []mapNeed) []needReq {
	var out []needReq
	for _, m := range objMaps {
		out = append(out, needReq{kind: NeedMapType, value: uint32(m.typ), name: uapiMapTypes[uint32(m.typ)], mapName: m.name})
	}
	if ps.Type != ebpf.UnspecifiedProgram {
		out = append(out, needReq{kind: NeedProgramType, value: uint32(ps.Type), name: uapiProgTypes[uint32(ps.Type)]})
	}
	if at := ps.AttachType; at != ebpf.AttachNone && !optionalAttach[[2]ebpf.AttachType{ebpf.AttachType(ps.Type), at}] {
		out = append(out, needReq{kind: NeedAttachType, value: uint32(at), name: uapiAttachTypes[uint32(at)]})
	}
	var helpers []uint32
	for _, ins := range insns {
		if ins.IsBuiltinCall() && ins.Constant > 0 && ins.Constant < 1<<16 && !slices.Contains(helpers, uint32(ins.Constant)) {
			helpers = append(helpers, uint32(ins.Constant))
		}
	}
	slices.Sort(helpers)
	for _, h := range helpers {
		out = append(out, needReq{kind: NeedHelper, value: h, name: uapiHelpers[h]})
	}
	if v4 := scanV4(insns, raw); len(v4) > 0 {
		out = append(out, needReq{kind: NeedInstructionSet, name: ISAv4, insns: v4})
	}
	return out
}

// mapNeed is a map of the object and its type.
type mapNeed struct {
	name string
	typ  ebpf.MapType
}

// objectMaps lists the maps whose types programs need, sorted by name.
func objectMaps(spec *ebpf.CollectionSpec) []mapNeed {
	var out []mapNeed
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue
		}
		out = append(out, mapNeed{name, ms.Type})
	}
	slices.SortFunc(out, func(a, b mapNeed) int { return strings.Compare(a.name, b.name) })
	return out
}

// resolveNeeds checks a program's needs against a kernel's features.
func resolveNeeds(f *features, reqs []needReq) []Need {
	out := make([]Need, 0, len(reqs))
	for _, r := range reqs {
		if r.kind == NeedInstructionSet {
			out = append(out, Need{Kind: r.kind, Name: r.name, Status: f.isa.statusOf(r.insns),
				Instructions: firstOfEachKind(r.insns)})
			continue
		}
		var idx enumIndex
		switch r.kind {
		case NeedMapType:
			idx = f.mapTypes
		case NeedProgramType:
			idx = f.progTypes
		case NeedAttachType:
			idx = f.attachTypes
		case NeedHelper:
			idx = f.helpers
		}
		n := Need{Kind: r.kind, Name: r.name, Map: r.mapName, Status: idx.check(r.value)}
		if n.Name == "" {
			// Newer than this build's table: the kernel may know its name.
			n.Name = idx[r.value]
		}
		if n.Name == "" {
			n.Name = fmt.Sprintf("%s #%d", r.kind, r.value)
		}
		out = append(out, n)
	}
	return out
}

// weakSymbols returns the names of the ELF object's undefined weak symbols:
// the __weak externs (kfuncs among them) that a loader leaves unresolved,
// rather than failing, when the kernel lacks them.
func weakSymbols(f *elf.File) (map[string]bool, error) {
	syms, err := f.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, fmt.Errorf("read symbols: %w", err)
	}
	out := make(map[string]bool)
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF && elf.ST_BIND(s.Info) == elf.STB_WEAK {
			out[s.Name] = true
		}
	}
	return out, nil
}

// unsupportedReasons decides whether a program can't run on the kernel: it
// returns one line per missing feature, in the order of the report (map
// types, program type, attach type, helpers, instruction set, then kfuncs
// and attach targets), or nil. Needs and targets whose presence is
// unknown don't count.
//
// A kfunc the program declares __weak is missing without consequence when
// no call to it is reachable: the program checks bpf_ksym_exists() first,
// and the loader turns the check into a constant 0 that prunes the call.
// weakKfuncReachable (nil: every call counts) reports whether a call to a
// missing kfunc is reachable with the kernel's values (see judge).
func unsupportedReasons(needs []Need, targets []Target, weakKfuncReachable func(name string) bool) []string {
	var out []string
	for _, n := range needs {
		if n.Status == TargetMissing {
			out = append(out, n.Reason())
		}
	}
	for _, t := range targets {
		if t.Status != TargetMissing {
			continue
		}
		switch t.Kind {
		case TargetKfunc:
			if weakKfuncReachable != nil && !weakKfuncReachable(t.Name) {
				continue
			}
			out = append(out, fmt.Sprintf("kfunc %s is not in this kernel", t.Name))
		case TargetTracepoint, TargetRawTracepoint, TargetBTFTracepoint:
			out = append(out, fmt.Sprintf("%s %s is not in this kernel", strings.ReplaceAll(t.Kind, "_", " "), t.Name))
		default:
			out = append(out, fmt.Sprintf("%s %s is not in this kernel", t.Kind, t.Name))
		}
	}
	return out
}
