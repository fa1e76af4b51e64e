package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// selectPrograms removes from spec every program not in names (none when
// names is empty).
func selectPrograms(spec *ebpf.CollectionSpec, names []string) error {
	if len(names) == 0 {
		return nil
	}
	keep := make(map[string]bool, len(names))
	var unknown []string
	for _, n := range names {
		if _, ok := spec.Programs[n]; !ok {
			unknown = append(unknown, n)
			continue
		}
		keep[n] = true
	}
	if len(unknown) > 0 {
		return fmt.Errorf("unknown program %s: the object has %s",
			strings.Join(unknown, ", "), listOrNone(slices.Sorted(maps.Keys(spec.Programs))))
	}
	for n := range spec.Programs {
		if !keep[n] {
			delete(spec.Programs, n)
		}
	}
	return nil
}

// applyMaxEntries overrides maps' max_entries.
func applyMaxEntries(spec *ebpf.CollectionSpec, max map[string]uint32) error {
	for _, name := range slices.Sorted(maps.Keys(max)) {
		m, ok := spec.Maps[name]
		if !ok || isDataSection(name) {
			return fmt.Errorf("max entries: unknown map %s: the object has %s", name, listOrNone(userMaps(spec)))
		}
		if max[name] == 0 {
			return fmt.Errorf("max entries: map %s: max_entries must be positive", name)
		}
		m.MaxEntries = max[name]
	}
	return nil
}

// userMaps lists the maps the object declares (not the .rodata, .data,
// .bss and .kconfig maps of its globals), sorted.
func userMaps(spec *ebpf.CollectionSpec) []string {
	var names []string
	for n := range spec.Maps {
		if !isDataSection(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// isDataSection reports whether a map holds an object's globals.
func isDataSection(name string) bool {
	return strings.HasPrefix(name, ".")
}

// applySet rewrites const volatile globals.
func applySet(spec *ebpf.CollectionSpec, set map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(set)) {
		v, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("set %s: unknown variable: the object's const volatile variables are %s",
				name, listOrNone(constVariables(spec)))
		}
		if !v.Constant() {
			return fmt.Errorf("set %s: not a const volatile variable (it is in %s, which the program can change): only .rodata globals can be set before load",
				name, v.SectionName)
		}
		if err := setVariable(v, set[name]); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// constVariables lists the object's const volatile variables, sorted.
func constVariables(spec *ebpf.CollectionSpec) []string {
	var names []string
	for n, v := range spec.Variables {
		if v.Constant() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// setVariable parses value according to v's BTF type and stores it in v.
func setVariable(v *ebpf.VariableSpec, value string) error {
	if v.Type == nil {
		return errors.New("the variable has no BTF type: compile with -g")
	}
	size := int(v.Size())
	typ := btf.UnderlyingType(v.Type.Type)
	var buf []byte
	var err error
	switch t := typ.(type) {
	case *btf.Int:
		buf, err = encodeInt(t, value)
	case *btf.Enum:
		buf, err = encodeEnum(t, value)
	case *btf.Array:
		buf, err = encodeCharArray(t, value)
	default:
		return fmt.Errorf("can't set a variable of type %s", typeName(v.Type.Type))
	}
	if err != nil {
		return err
	}
	if len(buf) != size {
		return fmt.Errorf("encoded %d bytes for a %d-byte variable", len(buf), size)
	}
	if v.Value == nil {
		v.Value = make([]byte, size)
	}
	copy(v.Value, buf)
	return nil
}

// typeName names a BTF type for error messages, e.g. "volatile const u32".
func typeName(t btf.Type) string {
	var prefix []string
	for range 16 {
		switch q := t.(type) {
		case *btf.Volatile:
			prefix = append(prefix, "volatile")
			t = q.Type
			continue
		case *btf.Const:
			prefix = append(prefix, "const")
			t = q.Type
			continue
		case *btf.Restrict:
			prefix = append(prefix, "restrict")
			t = q.Type
			continue
		case *btf.Pointer:
			return strings.Join(append(prefix, typeName(q.Target)+" *"), " ")
		}
		break
	}
	name := t.TypeName()
	if name == "" {
		name = fmt.Sprint(t)
	}
	return strings.Join(append(prefix, name), " ")
}

// encodeUint encodes v in size bytes, native endian.
func encodeUint(v uint64, size int) []byte {
	buf := make([]byte, size)
	switch size {
	case 1:
		buf[0] = byte(v)
	case 2:
		binary.NativeEndian.PutUint16(buf, uint16(v))
	case 4:
		binary.NativeEndian.PutUint32(buf, uint32(v))
	case 8:
		binary.NativeEndian.PutUint64(buf, v)
	}
	return buf
}

// parseInteger parses s as an integer of size bytes: decimal, or hex (0x),
// octal (0o) or binary (0b), range-checked.
func parseInteger(s string, size int, signed bool) (uint64, error) {
	if size != 1 && size != 2 && size != 4 && size != 8 {
		return 0, fmt.Errorf("unsupported integer size %d", size)
	}
	bits := size * 8
	s = strings.TrimSpace(s)
	if signed {
		v, err := strconv.ParseInt(s, 0, bits)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return 0, fmt.Errorf("%q is out of range for a signed %d-bit integer (%d..%d)", s, bits, int64(-1)<<(bits-1), int64(uint64(1)<<(bits-1)-1))
			}
			return 0, fmt.Errorf("%q is not an integer", s)
		}
		return uint64(v), nil
	}
	v, err := strconv.ParseUint(s, 0, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) || strings.HasPrefix(s, "-") {
			max := uint64(math.MaxUint64) >> (64 - bits)
			return 0, fmt.Errorf("%q is out of range for an unsigned %d-bit integer (0..%d)", s, bits, max)
		}
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return v, nil
}

func encodeInt(t *btf.Int, value string) ([]byte, error) {
	size := int(t.Size)
	if t.Encoding == btf.Bool {
		b, err := parseBool(value)
		if err != nil {
			return nil, err
		}
		if b {
			return encodeUint(1, size), nil
		}
		return encodeUint(0, size), nil
	}
	v, err := parseInteger(value, size, t.Encoding == btf.Signed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return encodeUint(v, size), nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "t", "yes", "y", "on":
		return true, nil
	case "0", "false", "f", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a bool (true or false)", s)
}

func encodeEnum(t *btf.Enum, value string) ([]byte, error) {
	size := int(t.Size)
	for _, ev := range t.Values {
		if ev.Name == value {
			return encodeUint(ev.Value, size), nil
		}
	}
	v, err := parseInteger(value, size, t.Signed)
	if err != nil {
		names := make([]string, 0, len(t.Values))
		for _, ev := range t.Values {
			names = append(names, ev.Name)
		}
		return nil, fmt.Errorf("enum %s: %q is neither one of %s nor an integer in range",
			t.Name, value, listOrNone(names))
	}
	return encodeUint(v, size), nil
}

func encodeCharArray(t *btf.Array, value string) ([]byte, error) {
	elem, ok := btf.UnderlyingType(t.Type).(*btf.Int)
	if !ok || elem.Size != 1 {
		return nil, fmt.Errorf("can't set an array of %s: only char arrays take a string", typeName(t.Type))
	}
	n := int(t.Nelems)
	if len(value) >= n {
		return nil, fmt.Errorf("string of %d bytes does not fit in char[%d] with its terminating NUL", len(value), n)
	}
	if strings.IndexByte(value, 0) >= 0 {
		return nil, errors.New("string contains a NUL byte")
	}
	buf := make([]byte, n)
	copy(buf, value)
	return buf, nil
}
