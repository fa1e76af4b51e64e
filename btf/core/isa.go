package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"
)

// This file decides whether a kernel accepts the instructions of version 4
// of the BPF instruction set (clang -mcpu=v4), which Linux 6.6 added in one
// series (commits 1f9a1ea821ff "bpf: Support new sign-extension load insns"
// to 4cd58e9 "bpf: Support new 32bit offset jmp instruction"):
//
//   - sign-extending loads: BPF_LDX | BPF_MEMSX (mode 0x80);
//   - sign-extending moves: BPF_ALU64 | BPF_MOV | BPF_X with offset 8, 16
//     or 32, BPF_ALU | BPF_MOV | BPF_X with offset 8 or 16;
//   - signed division and modulo: BPF_DIV and BPF_MOD with offset 1;
//   - the 32-bit offset jump: BPF_JMP32 | BPF_JA (gotol);
//   - the unconditional byte swap: BPF_ALU64 | BPF_END | BPF_TO_LE.
//
// Older verifiers refuse them: "unknown opcode", "BPF_LDX uses reserved
// fields" or "BPF_MOV uses reserved fields". No enum of the UAPI describes
// the instruction set, so the answer comes from the verifier's and the
// JIT's own code as the kernel's BTF describes it; see kernelISAv4 (and
// isaSupport.status for gotol, which stable kernels got alone).

// NeedInstructionSet is the Need kind of a program whose instructions need
// a newer BPF instruction set than the kernel may have.
const NeedInstructionSet = "instruction_set"

// ISAv4 is the name of the instruction_set need of a program that uses
// BPF ISA v4 instructions.
const ISAv4 = "BPF ISA v4"

// ISAInstruction is an instruction of a newer BPF instruction set in a
// program.
type ISAInstruction struct {
	// Kind says what the instruction does: "sign-extending load",
	// "sign-extending mov", "signed division", "signed modulo",
	// "32-bit offset jump (gotol)" or "unconditional byte swap".
	Kind string `json:"kind"`
	// Instruction is its raw offset in the program, counted as in
	// Poison.Instruction (8-byte slots, as the verifier log numbers them).
	Instruction int `json:"instruction"`
}

func (i ISAInstruction) String() string {
	return fmt.Sprintf("%s at insn %d", i.Kind, i.Instruction)
}

// v4Kind is a kind of ISA v4 instruction.
type v4Kind int

const (
	v4LoadSX v4Kind = iota
	v4MovSX
	v4SDiv
	v4SMod
	v4Gotol
	v4BSwap
)

var v4Names = [...]string{
	v4LoadSX: "sign-extending load",
	v4MovSX:  "sign-extending mov",
	v4SDiv:   "signed division",
	v4SMod:   "signed modulo",
	v4Gotol:  "32-bit offset jump (gotol)",
	v4BSwap:  "unconditional byte swap",
}

// checkedWhenReached reports whether a verifier that predates ISA v4
// refuses the instruction only when it reaches it. A sign-extending mov
// and a signed division or modulo reuse the opcodes of BPF_MOV, BPF_DIV
// and BPF_MOD (the offset field tells them apart), which such a verifier
// checks in do_check ("BPF_MOV uses reserved fields"), for the
// instructions it visits only: in code it prunes (a branch that this
// kernel's CO-RE values rule out) they are harmless. The other kinds are
// new opcodes, which it refuses before anything else, wherever they are
// (resolve_pseudo_ldimm64: "BPF_LDX uses reserved fields", and
// bpf_opcode_in_insntable: "unknown opcode").
func (k v4Kind) checkedWhenReached() bool {
	return k == v4MovSX || k == v4SDiv || k == v4SMod
}

// v4Insn is an ISA v4 instruction of a program, at raw offset raw.
type v4Insn struct {
	kind v4Kind
	raw  int
}

// v4KindOf classifies an instruction: ok is false unless it is one of the
// ISA v4 instructions, in an encoding that v4 verifiers accept (others
// are refused by every kernel, and need nothing newer).
func v4KindOf(ins asm.Instruction) (kind v4Kind, ok bool) {
	op := ins.OpCode
	switch cls := op.Class(); cls {
	case asm.LdXClass:
		if op.Mode() == asm.MemSXMode {
			return v4LoadSX, true
		}
	case asm.ALUClass, asm.ALU64Class:
		// cilium/ebpf decodes the offset-tagged opcodes into ALUOps of
		// their own (MovSX8 for BPF_MOV with offset 8, SDiv for BPF_DIV
		// with offset 1, ...).
		switch op.ALUOp() {
		case asm.MovSX8, asm.MovSX16:
			return v4MovSX, op.Source() == asm.RegSource
		case asm.MovSX32:
			return v4MovSX, op.Source() == asm.RegSource && cls == asm.ALU64Class
		case asm.SDiv:
			return v4SDiv, true
		case asm.SMod:
			return v4SMod, true
		case asm.Swap:
			return v4BSwap, cls == asm.ALU64Class && op.Endianness() == asm.LE
		}
	case asm.Jump32Class:
		if op.JumpOp() == asm.Ja {
			return v4Gotol, true
		}
	}
	return 0, false
}

// scanV4 returns a program's ISA v4 instructions in order; raw holds the
// raw offset of each instruction of insns.
func scanV4(insns asm.Instructions, raw []int) []v4Insn {
	var out []v4Insn
	for i, ins := range insns {
		if k, ok := v4KindOf(ins); ok {
			out = append(out, v4Insn{k, raw[i]})
		}
	}
	return out
}

// firstOfEachKind describes the first instruction of each kind in insns, in
// the order of the program.
func firstOfEachKind(insns []v4Insn) []ISAInstruction {
	var out []ISAInstruction
	var seen [len(v4Names)]bool
	for _, in := range insns {
		if !seen[in.kind] {
			seen[in.kind] = true
			out = append(out, ISAInstruction{Kind: v4Names[in.kind], Instruction: in.raw})
		}
	}
	return out
}

// isaReason is the one-line reason of a program whose ISA v4 instructions
// the kernel lacks.
func isaReason(name string, insns []ISAInstruction) string {
	parts := make([]string, len(insns))
	for i, in := range insns {
		parts[i] = in.String()
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%s instructions are not in this kernel", name)
	}
	return fmt.Sprintf("%s instructions (%s) are not in this kernel", name, strings.Join(parts, ", "))
}

// isaSupport is what a kernel's BTF says of its ISA v4 support: whether its
// verifier knows the instructions and whether its JIT compiles them (where
// the verifier accepts them) (TargetPresent, TargetMissing or
// TargetUnknown each; the zero value knows nothing).
type isaSupport struct {
	verifier, jit string
}

// status reports whether the kernel runs instructions of kind k.
//
// A verifier without the ISA may still know the 32-bit offset jump: its
// commit (4cd58e9af8b9, "bpf: Support new 32bit offset jmp instruction")
// went to stable kernels on its own, as a dependency of a fix (Linux
// 6.1.72, with x86-64 JIT support; Debian's 6.1 amd64 kernels have it and
// load gotol), and changed no type or function signature that BTF would
// show. So gotol is unknown there, not missing; unless the JIT lacks it:
// the arm64 JIT before its ISA v4 series (Debian's 6.1 arm64 refuses
// gotol, "operation not supported").
func (s isaSupport) status(k v4Kind) string {
	if s.jit == TargetMissing {
		return TargetMissing
	}
	switch s.verifier {
	case TargetMissing:
		if k == v4Gotol {
			return TargetUnknown
		}
		return TargetMissing
	case TargetPresent:
		if s.jit == "" {
			return TargetUnknown
		}
		return s.jit
	}
	return TargetUnknown
}

// statusOf summarizes the status of a program's ISA v4 instructions:
// missing if the kernel lacks any of them, else unknown if it may lack one,
// else present.
func (s isaSupport) statusOf(insns []v4Insn) string {
	out := TargetPresent
	for _, in := range insns {
		switch s.status(in.kind) {
		case TargetMissing:
			return TargetMissing
		case TargetUnknown:
			out = TargetUnknown
		}
	}
	return out
}

// kernelISAv4 decides from a kernel's BTF whether it runs ISA v4
// programs (TargetUnknown where its BTF can't tell). Two things must hold.
//
// The verifier must know the instructions. The series' first commit
// (1f9a1ea821ff, Linux 6.6) gave the verifier's check_mem_access() a
// parameter, is_ldsx, which later kernels kept (6.12 and 6.18 have it):
// a check_mem_access FUNC in BTF with that parameter proves the
// support, and one without it proves its absence (Debian 6.1 has the
// function, with 8 parameters and no is_ldsx; 6.12 has the 9). The marker
// is the feature's own code, so it holds for distribution kernels that
// backport the series onto an older release as for upstream ones. BTF has
// the FUNC only when the compiler did not inline the static function;
// when it is not there, two other marks of the same code prove the support
// (none proves its absence): the FUNC coerce_reg_to_size_sx (same commit;
// static, so it may be inlined too) and the member is_ldsx of struct
// bpf_insn_access_aux (commit 92de36080c93, a fix of the series' ctx
// accesses: Linux 6.11, and stable backports). Without
// any of them, the answer is unknown.
//
// The JIT must compile them. A JIT that lacks the new opcodes fails the
// program, which is then refused (CONFIG_BPF_JIT_ALWAYS_ON) or interpreted
// (Debian's kernels leave that option off); one that lacks the
// offset-tagged ones (sign-extending mov, signed division and modulo)
// compiles them as the plain instruction, and the program runs, wrongly.
// Whether it loads depends on the configuration, and it may run wrongly
// when it does: missing. The x86-64 JIT gained the instructions in the
// same series. The arm64 JIT gained them one release later (Linux 6.7), in
// a series whose first commit (6c9f86d3632c "arm64: insn: Add encoders
// for LDRSB/LDRSH/LDRSW") added the enumerators
// AARCH64_INSN_LDST_SIGNED_LOAD_{IMM,REG}_OFFSET to enum
// aarch64_insn_ldst_type, whose only user is the BPF JIT's sign-extending
// load; the enum is in arm64 kernels' BTF (the instruction encoders'
// functions take it; Debian 6.1 has it without them, 6.12 with them). The
// architecture itself comes from the BTF: arm64 kernels have that enum,
// x86-64 ones a struct pt_regs with r15 and orig_ax. Other architectures'
// JITs are not known here: unknown.
//
// The markers are read from the raw BTF when the kernel is loaded, without
// decoding types: cilium/ebpf would inflate a FUNC's whole type graph
// (struct bpf_verifier_env reaches most of the kernel's types: 130 ms for
// check_mem_access on this host's 6.18), where the raw pass costs about 3
// ms of CPU (the flavoured-names pass of LoadKernel about 6).
func kernelISAv4(types, strs []byte, bo binary.ByteOrder) (isaSupport, error) {
	m, err := scanISAMarks(types, strs, bo)
	if err != nil {
		return isaSupport{}, fmt.Errorf("instruction set: %w", err)
	}
	var s isaSupport
	switch {
	case m.has("check_mem_access", "is_ldsx"), m.has("coerce_reg_to_size_sx", ""),
		m.has("bpf_insn_access_aux", "is_ldsx"):
		s.verifier = TargetPresent
	case m.has("check_mem_access", ""):
		s.verifier = TargetMissing
	default:
		s.verifier = TargetUnknown
	}
	switch {
	case m.has("aarch64_insn_ldst_type", "AARCH64_INSN_LDST_SIGNED_LOAD_IMM_OFFSET"):
		s.jit = TargetPresent
	case m.has("aarch64_insn_ldst_type", ""):
		s.jit = TargetMissing
	case m.has("pt_regs", "r15") && m.has("pt_regs", "orig_ax"):
		s.jit = TargetPresent
	default:
		s.jit = TargetUnknown
	}
	return s, nil
}

// isaMarkTypes are the types whose names and member names kernelISAv4
// reads, by name, with their BTF kind.
var isaMarkTypes = map[string]uint32{
	"check_mem_access":       kindFunc,
	"coerce_reg_to_size_sx":  kindFunc,
	"bpf_insn_access_aux":    kindStruct,
	"aarch64_insn_ldst_type": kindEnum,
	"pt_regs":                kindStruct,
}

// isaMarks are the marker types a kernel's BTF has: for each name, the
// names of its members, enumerators or (for a function) parameters, of
// every type of that name.
type isaMarks map[string][]string

// has reports whether the BTF has a type name with a member (enumerator,
// parameter) named member, or any type name when member is "".
func (m isaMarks) has(name, member string) bool {
	members, ok := m[name]
	return ok && (member == "" || slices.Contains(members, member))
}

// scanISAMarks reads the marker types of a raw BTF type section: one pass
// for the named types, a second one, up to the last FUNC_PROTO needed, for
// the parameters of the FUNCs.
func scanISAMarks(types, strs []byte, bo binary.ByteOrder) (isaMarks, error) {
	out := make(isaMarks)
	members := func(off int, vlen, size int) ([]string, error) {
		var names []string
		for i := range vlen {
			n, err := cstring(strs, bo.Uint32(types[off+12+i*size:]))
			if err != nil {
				return nil, err
			}
			names = append(names, n)
		}
		return names, nil
	}
	protos := make(map[uint32][]string) // FUNC_PROTO ID -> FUNC names
	var lastProto uint32
	err := walkTypes(types, bo, func(id uint32, off int, kind uint32, vlen int) error {
		nameOff := bo.Uint32(types[off:])
		if nameOff == 0 || uint64(nameOff) >= uint64(len(strs)) {
			return nil
		}
		name, ok := markName(strs[nameOff:])
		if !ok {
			return nil
		}
		var m []string
		var err error
		switch want := isaMarkTypes[name]; {
		case kind == kindFunc && want == kindFunc:
			proto := bo.Uint32(types[off+8:])
			protos[proto] = append(protos[proto], name)
			lastProto = max(lastProto, proto)
			m = []string{}
		case kind == kindStruct && want == kindStruct:
			m, err = members(off, vlen, 12)
		case kind == kindEnum && want == kindEnum:
			m, err = members(off, vlen, 8)
		case kind == kindEnum64 && want == kindEnum:
			m, err = members(off, vlen, 12)
		default:
			return nil
		}
		out[name] = append(out[name], m...)
		return err
	})
	if err != nil || len(protos) == 0 {
		return out, err
	}
	err = walkTypes(types, bo, func(id uint32, off int, kind uint32, vlen int) error {
		if id > lastProto {
			return errStopWalk
		}
		if fns, ok := protos[id]; ok && kind == kindFuncProto {
			params, err := members(off, vlen, 8)
			if err != nil {
				return err
			}
			for _, fn := range fns {
				out[fn] = append(out[fn], params...)
			}
		}
		return nil
	})
	if errors.Is(err, errStopWalk) {
		err = nil
	}
	return out, err
}

var errStopWalk = errors.New("stop")

// walkTypes calls fn for each type of a raw BTF type section, with its ID
// (from 1), offset, kind and vlen, until fn returns an error.
func walkTypes(types []byte, bo binary.ByteOrder, fn func(id uint32, off int, kind uint32, vlen int) error) error {
	id := uint32(1)
	for off := 0; off < len(types); id++ {
		if len(types)-off < 12 {
			return fmt.Errorf("type at offset %d: short buffer", off)
		}
		info := bo.Uint32(types[off+4:])
		vlen := int(info & 0xffff)
		kind := (info >> 24) & 0x1f
		next := off + 12
		switch kind {
		case kindInt, kindVar, kindDeclTag:
			next += 4
		case kindArray:
			next += 12
		case kindStruct, kindUnion, kindDatasec, kindEnum64:
			next += 12 * vlen
		case kindEnum, kindFuncProto:
			next += 8 * vlen
		}
		if next > len(types) {
			return errors.New("type data out of bounds")
		}
		if err := fn(id, off, kind, vlen); err != nil {
			return err
		}
		off = next
	}
	return nil
}

// isaMarkNames are the keys of isaMarkTypes.
var isaMarkNames = slices.Sorted(maps.Keys(isaMarkTypes))

// markName returns the NUL-terminated name at the start of s when it is one
// of isaMarkTypes, without allocating for the others.
func markName(s []byte) (string, bool) {
	if len(s) == 0 || (s[0] != 'a' && s[0] != 'b' && s[0] != 'c' && s[0] != 'p') {
		return "", false
	}
	for _, name := range isaMarkNames {
		if len(s) > len(name) && s[len(name)] == 0 && string(s[:len(name)]) == name {
			return name, true
		}
	}
	return "", false
}
