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

	// A Kernel made by LoadKernelLazy leaves Modules empty and loads its
	// modules (shared by copies) on first need: see modules.

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

	// loadModules, for a Kernel made by LoadKernelLazy, reads and parses
	// the modules. It runs at most once (modsOnce), when a
	// lookup needs a name vmlinux lacks; mods, modNames and modFlavoured
	// (the flavoured index of each module) are only read after modsOnce.
	loadModules  func() ([]*btf.Spec, []string, []map[string][]string, error)
	modsOnce     sync.Once
	mods         []*btf.Spec
	modNames     []string
	modFlavoured []map[string][]string
	modsErr      error
	// inVMLinux caches, under mu's read lock (hence its own lock), whether
	// vmlinux has a type with a name's essential name.
	inVMLinuxMu sync.Mutex
	inVMLinux   map[string]bool

	// kfuncTags: vmlinux marks its kfuncs with the "bpf_kfunc" decl tag.
	kfuncTags bool
	// isa is what vmlinux says of the BPF ISA v4 (isa.go), read from the
	// raw BTF at load.
	isa isaSupport
	// feats are the kernel's BPF features (features.go), read once.
	featuresOnce sync.Once
	feats        *features
	featuresErr  error
}

// LoadKernel parses a kernel's BTF: vmlinux is the raw BTF of the kernel
// image (/sys/kernel/btf/vmlinux), modules maps module names to their raw
// split BTF. Types are decoded lazily, on first use.
func LoadKernel(id string, vmlinux []byte, modules map[string][]byte) (*Kernel, error) {
	k, strs, err := loadVMLinux(id, vmlinux)
	if err != nil {
		return nil, err
	}
	mods, names, fls, err := loadModules(id, k.VMLinux, k.state.byteOrder, strs, modules)
	if err != nil {
		return nil, err
	}
	k.Modules, k.ModuleNames = mods, names
	k.state.flavoured = append(k.state.flavoured, fls...)
	return k, nil
}

// LoadKernelLazy is LoadKernel for a kernel whose modules' BTF is only read,
// unpacked and parsed (by calling modules, at most once) when a relocation
// or a tracing target needs a type that vmlinux lacks. This is the order of
// libbpf (bpf_core_find_cands) and of the kernel's own CO-RE: candidates
// come from vmlinux, and from the modules only when vmlinux has none. An
// error from modules is returned by the Relocate that needed them.
func LoadKernelLazy(id string, vmlinux []byte, modules func() (map[string][]byte, error)) (*Kernel, error) {
	k, strs, err := loadVMLinux(id, vmlinux)
	if err != nil {
		return nil, err
	}
	bo := k.state.byteOrder
	spec := k.VMLinux
	k.state.loadModules = func() ([]*btf.Spec, []string, []map[string][]string, error) {
		if modules == nil {
			return nil, nil, nil, nil
		}
		raw, err := modules()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kernel %s: module BTF: %w", id, err)
		}
		return loadModules(id, spec, bo, strs, raw)
	}
	return k, nil
}

func loadVMLinux(id string, vmlinux []byte) (*Kernel, []byte, error) {
	_, bo, types, strs, err := parseBTFHeader(vmlinux)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(vmlinux))
	if err != nil {
		return nil, nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	fl, kfuncTags, err := flavouredNames(types, strs, nil, bo)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	isa, err := kernelISAv4(types, strs, bo)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel %s: vmlinux: %w", id, err)
	}
	k := &Kernel{
		ID:      id,
		VMLinux: spec,
		state: &kernelState{
			byteOrder: bo,
			flavoured: []map[string][]string{fl},
			prepared:  make(map[string]bool),
			kfuncTags: kfuncTags,
			isa:       isa,
		},
	}
	return k, strs, nil
}

// loadModules parses the modules' split BTF on top of spec, in name order,
// with each module's flavoured-names index.
func loadModules(id string, spec *btf.Spec, bo binary.ByteOrder, strs []byte, modules map[string][]byte) ([]*btf.Spec, []string, []map[string][]string, error) {
	var (
		mods  []*btf.Spec
		names []string
		fls   []map[string][]string
	)
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		raw := modules[name]
		_, mbo, mtypes, mstrs, err := parseBTFHeader(raw)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kernel %s: module %s: %w", id, name, err)
		}
		if mbo != bo {
			return nil, nil, nil, fmt.Errorf("kernel %s: module %s: byte order %s differs from vmlinux", id, name, mbo)
		}
		mod, err := btf.LoadSplitSpecFromReader(bytes.NewReader(raw), spec)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kernel %s: module %s: %w", id, name, err)
		}
		mfl, _, err := flavouredNames(mtypes, mstrs, strs, bo)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kernel %s: module %s: %w", id, name, err)
		}
		mods = append(mods, mod)
		names = append(names, name)
		fls = append(fls, mfl)
	}
	return mods, names, fls, nil
}

// WithID returns a copy of k named id that shares k's parsed BTF.
func (k *Kernel) WithID(id string) *Kernel {
	cpy := *k
	cpy.ID = id
	cpy.Modules = slices.Clone(k.Modules)
	cpy.ModuleNames = slices.Clone(k.ModuleNames)
	return &cpy
}

// specs returns the targets of CO-RE: VMLinux, followed by the modules if
// mods.
func (k *Kernel) specs(mods bool) []*btf.Spec {
	out := []*btf.Spec{k.VMLinux}
	if mods {
		ms, _, _ := k.modules(k.state)
		out = append(out, ms...)
	}
	return out
}

// modules returns the kernel's modules and their names, loading them first
// for a Kernel made by LoadKernelLazy.
func (k *Kernel) modules(st *kernelState) ([]*btf.Spec, []string, error) {
	if len(k.Modules) > 0 || st == nil || st.loadModules == nil {
		return k.Modules, k.ModuleNames, nil
	}
	st.modsOnce.Do(func() {
		st.mods, st.modNames, st.modFlavoured, st.modsErr = st.loadModules()
	})
	return st.mods, st.modNames, st.modsErr
}

// flavouredIndex returns the flavoured-names index of spec number i (0:
// vmlinux), nil if unknown. For a lazy kernel's module, call it only after
// modules.
func (k *Kernel) flavouredIndex(st *kernelState, i int) map[string][]string {
	switch {
	case st == nil:
		return nil
	case i < len(st.flavoured):
		return st.flavoured[i]
	case st.loadModules != nil && i > 0 && i-1 < len(st.modFlavoured):
		return st.modFlavoured[i-1]
	}
	return nil
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
// names (type names, exact or essential), from any goroutine. Like libbpf,
// it goes to the modules only if vmlinux lacks one of names: fn is told
// whether the modules take part (mods), and must pass it on to specs,
// candidates and hasType.
func (k *Kernel) lookup(names []string, fn func(mods bool) error) error {
	st, err := k.kstate()
	if err != nil {
		return err
	}
	if len(k.Modules) == 0 && st.loadModules == nil {
		// Lookups in one spec are serialized by cilium/ebpf itself.
		return fn(false)
	}

	st.mu.RLock()
	need, err := k.needsModules(st, names)
	st.mu.RUnlock()
	if err != nil {
		return err
	}
	if !need {
		st.mu.RLock()
		defer st.mu.RUnlock()
		return fn(false)
	}
	mods, _, err := k.modules(st)
	if err != nil {
		return err
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
			for i, mod := range mods {
				for _, full := range k.candidateNames(st, i+1, n) {
					if _, err := mod.AnyTypesByName(full); err != nil && !errors.Is(err, btf.ErrNotFound) {
						st.mu.Unlock()
						return fmt.Errorf("kernel %s: module %s: %w", k.ID, k.moduleName(st, i), err)
					}
				}
			}
			st.prepared[n] = true
		}
		st.mu.Unlock()
	}

	st.mu.RLock()
	defer st.mu.RUnlock()
	return fn(true)
}

// needsModules reports whether vmlinux lacks a type named like one of names
// (exactly, or by essential name). Call it under st.mu's read lock.
func (k *Kernel) needsModules(st *kernelState, names []string) (bool, error) {
	st.inVMLinuxMu.Lock()
	defer st.inVMLinuxMu.Unlock()
	if st.inVMLinux == nil {
		st.inVMLinux = make(map[string]bool)
	}
	for _, n := range names {
		has, ok := st.inVMLinux[n]
		if !ok {
			for _, full := range k.candidateNames(st, 0, n) {
				_, err := k.VMLinux.AnyTypesByName(full)
				if err == nil {
					has = true
					break
				}
				if !errors.Is(err, btf.ErrNotFound) {
					return false, fmt.Errorf("kernel %s: vmlinux: %w", k.ID, err)
				}
			}
			st.inVMLinux[n] = has
		}
		if !has {
			return true, nil
		}
	}
	return false, nil
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
	for _, f := range k.flavouredIndex(st, i)[ess] {
		if f != name {
			out = append(out, f)
		}
	}
	return out
}

func (k *Kernel) moduleName(st *kernelState, i int) string {
	if _, names, _ := k.modules(st); i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("#%d", i)
}

// candidates returns every type that cilium/ebpf's CO-RE engine considers
// for a local type named name: all types in vmlinux (and the modules, if
// mods) with the same essential name. Call it inside lookup.
func (k *Kernel) candidates(st *kernelState, name string, mods bool) ([]btf.Type, error) {
	var out []btf.Type
	seen := make(map[btf.Type]bool)
	ess := essentialName(name)
	for i, spec := range k.specs(mods) {
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

// hasType reports whether vmlinux (or a module, if mods) has a type named
// name for which match returns true. Call it inside lookup.
func (k *Kernel) hasType(name string, match func(btf.Type) bool, mods bool) (bool, error) {
	for _, spec := range k.specs(mods) {
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
