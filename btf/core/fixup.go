package core

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// coreKind is enum bpf_core_relo_kind.
type coreKind uint32

const (
	kindFieldByteOffset coreKind = iota
	kindFieldByteSize
	kindFieldExists
	kindFieldSigned
	kindFieldLShiftU64
	kindFieldRShiftU64
	kindTypeIDLocal
	kindTypeIDTarget
	kindTypeExists
	kindTypeSize
	kindEnumvalExists
	kindEnumvalValue
	kindTypeMatches
)

// String returns the kind's name in reports: the kernel's BPF_CORE_* enum
// name, lower case and without the prefix.
func (k coreKind) String() string {
	switch k {
	case kindFieldByteOffset:
		return "field_byte_offset"
	case kindFieldByteSize:
		return "field_byte_size"
	case kindFieldExists:
		return "field_exists"
	case kindFieldSigned:
		return "field_signed"
	case kindFieldLShiftU64:
		return "field_lshift_u64"
	case kindFieldRShiftU64:
		return "field_rshift_u64"
	case kindTypeIDLocal:
		return "type_id_local"
	case kindTypeIDTarget:
		return "type_id_target"
	case kindTypeExists:
		return "type_exists"
	case kindTypeSize:
		return "type_size"
	case kindEnumvalExists:
		return "enumval_exists"
	case kindEnumvalValue:
		return "enumval_value"
	case kindTypeMatches:
		return "type_matches"
	}
	return fmt.Sprintf("kind_%d", uint32(k))
}

// ciliumName is the kind's name in cilium/ebpf's CORERelocation.String.
func (k coreKind) ciliumName() string {
	switch k {
	case kindFieldByteOffset:
		return "byte_off"
	case kindFieldByteSize:
		return "byte_sz"
	case kindFieldSigned:
		return "signed"
	case kindFieldLShiftU64:
		return "lshift_u64"
	case kindFieldRShiftU64:
		return "rshift_u64"
	case kindTypeIDLocal:
		return "local_type_id"
	case kindTypeIDTarget:
		return "target_type_id"
	}
	return k.String()
}

func (k coreKind) isField() bool { return k <= kindFieldRShiftU64 }
func (k coreKind) isEnum() bool  { return k == kindEnumvalExists || k == kindEnumvalValue }

// checksExistence reports whether the relocation computes an existence
// (0 or 1) rather than a layout value.
func (k coreKind) checksExistence() bool {
	return k == kindFieldExists || k == kindTypeExists || k == kindEnumvalExists || k == kindTypeMatches
}

// Fixup is one CO-RE fixup in a comparable form.
//
// Fixups computed against different BTF for the same object are equal
// exactly when they rewrite the instruction the same way, with one
// exception: type_id_target fixups name a type ID, which differs between a
// kernel's full BTF and a minimized copy of it; for those, Target is 0 and
// TargetType names the target type instead ("struct task_struct").
type Fixup struct {
	// Instruction is the raw offset of the instruction in the program, as
	// in Poison.
	Instruction int `json:"instruction"`
	// Kind is the relocation kind ("field_byte_offset", ...).
	Kind string `json:"kind"`
	// Local is the value the compiler emitted, Target the value for the
	// target BTF. Both are zero when Poison is set.
	Local  uint64 `json:"local"`
	Target uint64 `json:"target"`
	// Poison is set when the relocation matched nothing in the target: the
	// instruction is replaced with a call to an invalid helper.
	Poison bool `json:"poison,omitempty"`
	// TargetType names the target type of a type_id_target fixup.
	TargetType string `json:"target_type,omitempty"`
}

// String formats f like "12: field_byte_offset 1280->1288".
func (f Fixup) String() string {
	if f.Poison {
		return fmt.Sprintf("%d: %s poison", f.Instruction, f.Kind)
	}
	if f.TargetType != "" {
		return fmt.Sprintf("%d: %s %d->%s", f.Instruction, f.Kind, f.Local, f.TargetType)
	}
	return fmt.Sprintf("%d: %s %d->%d", f.Instruction, f.Kind, f.Local, f.Target)
}

// failedFixup is the single Fixup that stands for a program whose CO-RE
// relocation failed.
func failedFixup() Fixup { return Fixup{Instruction: -1, Kind: "failed"} }

// parseCOREFixup turns a btf.COREFixup into a Fixup. cilium/ebpf exports a
// fixup's values only through its String method ("byte_off=24->32" or
// "byte_off=poison"), so that is what this parses.
func parseCOREFixup(fx *btf.COREFixup, r *relo) (Fixup, error) {
	out := Fixup{Instruction: r.raw, Kind: r.kind.String()}
	s := fx.String()
	i := strings.LastIndexByte(s, '=')
	if i < 0 {
		return out, fmt.Errorf("unexpected CO-RE fixup %q", s)
	}
	if s[:i] != r.kind.ciliumName() {
		return out, fmt.Errorf("CO-RE fixup %q for a %s relocation", s, r.kind)
	}
	val := s[i+1:]
	if val == "poison" {
		out.Poison = true
		return out, nil
	}
	local, target, ok := strings.Cut(val, "->")
	if !ok {
		return out, fmt.Errorf("unexpected CO-RE fixup %q", s)
	}
	var err error
	if out.Local, err = strconv.ParseUint(local, 10, 64); err != nil {
		return out, fmt.Errorf("CO-RE fixup %q: %w", s, err)
	}
	if out.Target, err = strconv.ParseUint(target, 10, 64); err != nil {
		return out, fmt.Errorf("CO-RE fixup %q: %w", s, err)
	}
	return out, nil
}
