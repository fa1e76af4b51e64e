package inspect

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// helperName returns the C name of a BPF helper, e.g. "bpf_probe_read_kernel"
// for asm.FnProbeReadKernel, or "helper#N" for a helper cilium/ebpf doesn't
// know.
//
// cilium/ebpf generates its Fn* constants from the kernel's helper names by
// turning snake_case into CamelCase; this reverses that.
func helperName(fn asm.BuiltinFunc) string {
	s := fn.String()
	camel, ok := strings.CutPrefix(s, "Fn")
	if !ok || camel == "" {
		return fmt.Sprintf("helper#%d", uint32(fn))
	}

	var b strings.Builder
	b.WriteString("bpf")
	for _, r := range camel {
		if unicode.IsUpper(r) {
			// A new word starts at every capital; the first one follows
			// "bpf". Digits stay in their word: "L3Csum" is "l3_csum".
			b.WriteByte('_')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// typeName returns a C-like name for typ, without qualifiers: "u32",
// "char[16]", "struct config", "int *".
func typeName(typ btf.Type) string {
	var dims []string
	for {
		switch t := typ.(type) {
		case nil:
			return "void" + strings.Join(dims, "")
		case *btf.Var:
			typ = t.Type
			continue
		case *btf.Const:
			typ = t.Type
			continue
		case *btf.Volatile:
			typ = t.Type
			continue
		case *btf.Restrict:
			typ = t.Type
			continue
		case *btf.TypeTag:
			typ = t.Type
			continue
		case *btf.Array:
			dims = append(dims, fmt.Sprintf("[%d]", t.Nelems))
			typ = t.Type
			continue
		}
		break
	}

	suffix := strings.Join(dims, "")
	switch t := typ.(type) {
	case *btf.Void:
		return "void" + suffix
	case *btf.Pointer:
		return typeName(t.Target) + " *" + suffix
	case *btf.Struct:
		return tagged("struct", t.Name) + suffix
	case *btf.Union:
		return tagged("union", t.Name) + suffix
	case *btf.Enum:
		return tagged("enum", t.Name) + suffix
	case *btf.Fwd:
		return tagged(t.Kind.String(), t.Name) + suffix
	case *btf.FuncProto:
		return "func" + suffix
	}
	if name := typ.TypeName(); name != "" {
		// Typedef, Int, Float.
		return name + suffix
	}
	return fmt.Sprint(typ) + suffix
}

// tagged formats a struct/union/enum name, using "{...}" for anonymous
// types.
func tagged(kind, name string) string {
	if name == "" {
		name = "{...}"
	}
	return kind + " " + name
}
