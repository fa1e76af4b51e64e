//go:build linux

package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/bpfsrc/records"
)

// describeTypes records in l the BTF of its maps' keys, values and records,
// from spec (the object as loaded). An object without BTF leaves l without.
func describeTypes(l *Loaded, spec *ebpf.CollectionSpec) error {
	if spec.Types == nil {
		return nil
	}
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		return fmt.Errorf("map types: %w", err)
	}
	add := func(t btf.Type) (uint32, error) {
		if t == nil {
			return 0, nil
		}
		id, err := b.Add(t)
		return uint32(id), err
	}
	recs := records.Find(spec)
	for i := range l.Maps {
		ms := &l.Maps[i]
		spec := spec.Maps[ms.Name]
		if spec == nil {
			continue
		}
		if records.Outputs(spec.Type) {
			if r := recs[ms.Name]; r != nil {
				ms.RecordOrigin, ms.RecordNote = string(r.Origin), r.Reason
				if ms.RecordTypeID, err = add(r.Type); err != nil {
					return fmt.Errorf("map %s: record type: %w", ms.Name, err)
				}
			}
			continue
		}
		if ms.KeyTypeID, err = add(spec.Key); err != nil {
			return fmt.Errorf("map %s: key type: %w", ms.Name, err)
		}
		if ms.ValueTypeID, err = add(spec.Value); err != nil {
			return fmt.Errorf("map %s: value type: %w", ms.Name, err)
		}
	}
	if b.Empty() {
		return nil
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		return fmt.Errorf("map types: %w", err)
	}
	l.BTF = raw
	return nil
}
