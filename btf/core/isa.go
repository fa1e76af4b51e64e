package core

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
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
// JIT's own code as the kernel's BTF describes it; see kernelISAv4.

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

// kernelISAv4 decides from a kernel's BTF whether it runs ISA v4
// programs: TargetPresent, TargetMissing, or TargetUnknown when its BTF
// can't tell. Two things must hold.
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
func kernelISAv4(vmlinux *btf.Spec) (string, error) {
	verifier, err := verifierISAv4(vmlinux)
	if err != nil || verifier != TargetPresent {
		return verifier, err
	}
	arm64, err := typesNamed[*btf.Enum](vmlinux, "aarch64_insn_ldst_type")
	if err != nil {
		return "", err
	}
	if len(arm64) > 0 {
		for _, e := range arm64 {
			if slices.ContainsFunc(e.Values, func(v btf.EnumValue) bool {
				return v.Name == "AARCH64_INSN_LDST_SIGNED_LOAD_IMM_OFFSET"
			}) {
				return TargetPresent, nil
			}
		}
		return TargetMissing, nil
	}
	regs, err := typesNamed[*btf.Struct](vmlinux, "pt_regs")
	if err != nil {
		return "", err
	}
	for _, s := range regs {
		if hasMember(s, "r15") && hasMember(s, "orig_ax") {
			return TargetPresent, nil
		}
	}
	return TargetUnknown, nil
}

// verifierISAv4 decides whether the kernel's verifier knows the ISA v4
// instructions (see kernelISAv4).
func verifierISAv4(vmlinux *btf.Spec) (string, error) {
	funcs, err := typesNamed[*btf.Func](vmlinux, "check_mem_access")
	if err != nil {
		return "", err
	}
	for _, fn := range funcs {
		if proto, ok := fn.Type.(*btf.FuncProto); ok && slices.ContainsFunc(proto.Params, func(p btf.FuncParam) bool {
			return p.Name == "is_ldsx"
		}) {
			return TargetPresent, nil
		}
	}
	sx, err := typesNamed[*btf.Func](vmlinux, "coerce_reg_to_size_sx")
	if err != nil {
		return "", err
	}
	if len(sx) > 0 {
		return TargetPresent, nil
	}
	aux, err := typesNamed[*btf.Struct](vmlinux, "bpf_insn_access_aux")
	if err != nil {
		return "", err
	}
	if slices.ContainsFunc(aux, func(s *btf.Struct) bool { return hasMember(s, "is_ldsx") }) {
		return TargetPresent, nil
	}
	if len(funcs) > 0 {
		return TargetMissing, nil
	}
	return TargetUnknown, nil
}

// typesNamed returns the types of kind T named name (none when there is
// no such type).
func typesNamed[T btf.Type](spec *btf.Spec, name string) ([]T, error) {
	types, err := spec.AnyTypesByName(name)
	if errors.Is(err, btf.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var out []T
	for _, t := range types {
		if x, ok := t.(T); ok && t.TypeName() == name {
			out = append(out, x)
		}
	}
	return out, nil
}

func hasMember(s *btf.Struct, name string) bool {
	return slices.ContainsFunc(s.Members, func(m btf.Member) bool { return m.Name == name })
}
