package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// Kernel is a target kernel's parsed BTF: vmlinux plus its modules' split
// BTF. Parse it once with LoadKernel and reuse it for many objects: it is
// safe for concurrent use.
//
// Copies of a Kernel (for example to register the same parsed BTF under
// another ID, see WithID) share the parsed types and are safe to use
// concurrently with each other.
type Kernel struct {
	// ID names the kernel in reports.
	ID string
	// VMLinux is the kernel image's BTF.
	VMLinux *btf.Spec
	// Modules holds each module's split BTF, on top of VMLinux, in the
	// order of ModuleNames.
	Modules []*btf.Spec
	// ModuleNames names Modules.
	ModuleNames []string

	state *kernelState
}

// kernelState is what the copies of a Kernel share.
type kernelState struct {
	byteOrder binary.ByteOrder
	// flavoured indexes, for VMLinux (index 0) and each module, the type
	// names containing "___" by essential name. Nil for a Kernel that was
	// not made by LoadKernel.
	flavoured []map[string][]string

	// cilium/ebpf decodes types lazily. A module's decoder inflates the
	// base's types without holding the base's lock, so looking types up in
	// a module must not run concurrently with any other lookup in the same
	// kernel. mu serializes the first lookup of each name in the modules
	// (under the write lock, recorded in prepared); afterwards a lookup only
	// reads the modules' caches and runs under the read lock.
	mu       sync.RWMutex
	prepared map[string]bool

	// kfuncTags: vmlinux marks its kfuncs with the "bpf_kfunc" decl tag.
	kfuncTags bool
	// feats are the kernel's BPF features (features.go), read once.
	featuresOnce sync.Once
	feats        *features
	featuresErr  error
}

// LoadKernel parses a kernel's BTF: vmlinux is the raw BTF of the kernel
// image (/sys/kernel/btf/vmlinux), modules maps module names to their raw
// split BTF. Types are decoded lazily, on first use.
func LoadKernel(id string, vmlinux []byte, modules map[string][]byte) (*Kernel, error) {
	_, bo, types, strs, err := parseBTFHeader(vmlinux)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(vmlinux))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	fl, kfuncTags, err := flavouredNames(types, strs, nil, bo)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	k := &Kernel{
		ID:      id,
		VMLinux: spec,
		state: &kernelState{
			byteOrder: bo,
			flavoured: []map[string][]string{fl},
			prepared:  make(map[string]bool),
			kfuncTags: kfuncTags,
		},
	}
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		raw := modules[name]
		_, mbo, mtypes, mstrs, err := parseBTFHeader(raw)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: module %s: %w", id, name, err)
		}
		if mbo != bo {
			return nil, fmt.Errorf("kernel %s: module %s: byte order %s differs from vmlinux", id, name, mbo)
		}
		mod, err := btf.LoadSplitSpecFromReader(bytes.NewReader(raw), spec)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: module %s: %w", id, name, err)
		}
		mfl, _, err := flavouredNames(mtypes, mstrs, strs, bo)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: module %s: %w", id, name, err)
		}
		k.Modules = append(k.Modules, mod)
		k.ModuleNames = append(k.ModuleNames, name)
		k.state.flavoured = append(k.state.flavoured, mfl)
	}
	return k, nil
}

// WithID returns a copy of k named id that shares k's parsed BTF.
func (k *Kernel) WithID(id string) *Kernel {
	cpy := *k
	cpy.ID = id
	cpy.Modules = slices.Clone(k.Modules)
	cpy.ModuleNames = slices.Clone(k.ModuleNames)
	return &cpy
}

// specs returns VMLinux followed by the modules: the targets of CO-RE.
func (k *Kernel) specs() []*btf.Spec {
	return append([]*btf.Spec{k.VMLinux}, k.Modules...)
}

var (
	fallbackStatesMu sync.Mutex
	fallbackStates   = make(map[*btf.Spec]*kernelState)
)

// kstate returns k's shared state. A Kernel built without LoadKernel has no
// flavoured-names index (flavoured kernel types, rare, are then not
// minimized as candidates) and, if it has modules, shares one state per
// VMLinux spec for the life of the process.
func (k *Kernel) kstate() (*kernelState, error) {
	if k == nil || k.VMLinux == nil {
		return nil, errors.New("kernel has no vmlinux BTF")
	}
	if len(k.Modules) != len(k.ModuleNames) && len(k.ModuleNames) != 0 {
		return nil, fmt.Errorf("kernel %s: %d modules but %d module names", k.ID, len(k.Modules), len(k.ModuleNames))
	}
	if k.state != nil {
		return k.state, nil
	}
	if len(k.Modules) == 0 {
		// Nothing to serialize: lookup doesn't lock without modules.
		return &kernelState{prepared: make(map[string]bool)}, nil
	}
	fallbackStatesMu.Lock()
	defer fallbackStatesMu.Unlock()
	st := fallbackStates[k.VMLinux]
	if st == nil {
		st = &kernelState{prepared: make(map[string]bool)}
		fallbackStates[k.VMLinux] = st
	}
	return st, nil
}

// lookup runs fn with the kernel's types ready for looking up every name in
// names (type names, exact or essential), from any goroutine.
func (k *Kernel) lookup(names []string, fn func() error) error {
	st, err := k.kstate()
	if err != nil {
		return err
	}
	if len(k.Modules) == 0 {
		// Lookups in one spec are serialized by cilium/ebpf itself.
		return fn()
	}

	st.mu.RLock()
	missing := slices.ContainsFunc(names, func(n string) bool { return !st.prepared[n] })
	st.mu.RUnlock()
	if missing {
		st.mu.Lock()
		for _, n := range names {
			if st.prepared[n] {
				continue
			}
			// Inflate every module type fn may ask for, so that fn only hits
			// the modules' caches.
			for i, mod := range k.Modules {
				for _, full := range k.candidateNames(st, i+1, n) {
					if _, err := mod.AnyTypesByName(full); err != nil && !errors.Is(err, btf.ErrNotFound) {
						st.mu.Unlock()
						return fmt.Errorf("kernel %s: module %s: %w", k.ID, k.moduleName(i), err)
					}
				}
			}
			st.prepared[n] = true
		}
		st.mu.Unlock()
	}

	st.mu.RLock()
	defer st.mu.RUnlock()
	return fn()
}

// candidateNames returns the full type names whose essential name is
// essentialName(name), in spec number i (0: vmlinux) as far as the
// flavoured index knows them, plus name itself.
func (k *Kernel) candidateNames(st *kernelState, i int, name string) []string {
	out := []string{name}
	ess := essentialName(name)
	if ess != name {
		out = append(out, ess)
	}
	if i < len(st.flavoured) {
		for _, f := range st.flavoured[i][ess] {
			if f != name {
				out = append(out, f)
			}
		}
	}
	return out
}

func (k *Kernel) moduleName(i int) string {
	if i < len(k.ModuleNames) {
		return k.ModuleNames[i]
	}
	return fmt.Sprintf("#%d", i)
}

// candidates returns every type that cilium/ebpf's CO-RE engine considers
// for a local type named name: all types in vmlinux and the modules with the
// same essential name. Call it inside lookup.
func (k *Kernel) candidates(st *kernelState, name string) ([]btf.Type, error) {
	var out []btf.Type
	seen := make(map[btf.Type]bool)
	ess := essentialName(name)
	for i, spec := range k.specs() {
		for _, full := range k.candidateNames(st, i, ess) {
			types, err := spec.AnyTypesByName(full)
			if errors.Is(err, btf.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			for _, t := range types {
				if !seen[t] && essentialName(t.TypeName()) == ess {
					seen[t] = true
					out = append(out, t)
				}
			}
		}
	}
	return out, nil
}

// hasType reports whether vmlinux or a module has a type named name for
// which match returns true. Call it inside lookup.
func (k *Kernel) hasType(name string, match func(btf.Type) bool) (bool, error) {
	for _, spec := range k.specs() {
		types, err := spec.AnyTypesByName(name)
		if errors.Is(err, btf.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(types, match) {
			return true, nil
		}
	}
	return false, nil
}
