package testenv

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/cilium/ebpf/btf"
)

// OldKernelBTF rewrites raw kernel BTF into that of a kernel without some
// BPF features: the enumerators named in enumerators are removed from
// every enum (BPF_MAP_TYPE_RINGBUF, BPF_TCX_INGRESS, BPF_FUNC_…), and
// the functions (kfuncs) named in funcs are dropped. Every other type is
// kept as it is. It fails if any name is not found, so that a test can't
// silently build the kernel it started from.
func OldKernelBTF(raw []byte, enumerators, funcs []string) ([]byte, error) {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	found := make(map[string]bool)
	var types []btf.Type
	for typ, err := range spec.All() {
		if err != nil {
			return nil, err
		}
		switch t := typ.(type) {
		case *btf.Enum:
			// In place: other types (struct bpf_map's map_type) refer to it.
			t.Values = slices.DeleteFunc(t.Values, func(v btf.EnumValue) bool {
				if slices.Contains(enumerators, v.Name) {
					found[v.Name] = true
					return true
				}
				return false
			})
		case *btf.Func:
			if slices.Contains(funcs, t.Name) {
				found[t.Name] = true
				continue
			}
		}
		types = append(types, typ)
	}
	for _, n := range append(slices.Clone(enumerators), funcs...) {
		if !found[n] {
			return nil, fmt.Errorf("no %s in the BTF", n)
		}
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		return nil, err
	}
	return b.Marshal(nil, nil)
}
