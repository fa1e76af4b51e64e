//go:build linux

package loader

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/internal/objname"
)

// hostBTFPath is where the kernel exposes its BTF; a variable for tests.
var hostBTFPath = "/sys/kernel/btf/vmlinux"

// Subdirectories of a set's pin directory.
const (
	mapsDir  = "maps"
	progsDir = "progs"
	linksDir = "links"
)

// withDefaults fills in o's defaults.
func (o Options) withDefaults() Options {
	if o.PinDir == "" {
		o.PinDir = DefaultPinDir
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	o.PinDir = filepath.Clean(o.PinDir)
	o.StateDir = filepath.Clean(o.StateDir)
	return o
}

// nameRE matches set names (the server's program names).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// checkName checks that name is a valid set name.
func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("set name %q: want letters, digits, '.', '_' and '-', not starting with '.' or '-', at most 128 characters", name)
	}
	return nil
}

// setDir is the pin directory of set name: bpffs refuses dots in names, so
// they become '~' (which set names don't have). name must have passed
// checkName.
func setDir(pinDir, name string) string {
	return filepath.Join(pinDir, strings.ReplaceAll(name, ".", "~"))
}

// pinPath is the pin of component (a program, map or link pin name) in the
// subdirectory sub of the set directory dir. It refuses a component that
// is not a single file name, and checks that the path stays in dir/sub:
// names come from the object, and are data, never paths.
func pinPath(dir, sub, component string) (string, error) {
	parent := filepath.Join(dir, sub)
	p := filepath.Join(parent, component)
	if component == "" || component == "." || component == ".." || strings.ContainsAny(component, "/\x00") ||
		filepath.Dir(p) != parent || !strings.HasPrefix(p, dir+string(filepath.Separator)) {
		return "", fmt.Errorf("pin name %q: not a file name in %s", component, parent)
	}
	return p, nil
}

// pinName is the name of a map's pin: bpffs refuses dots, so the maps of
// an object's globals (.rodata, .bss, .data.foo) pin as _rodata, _bss,
// _data_foo.
func pinName(name string) string {
	return strings.ReplaceAll(name, ".", "_")
}

// prepared is an artifact's collection spec, edited as the options say and
// ready to load.
type prepared struct {
	spec     *ebpf.CollectionSpec
	mode     Mode
	progOpts ebpf.ProgramOptions
	btfCache *btf.Cache // Options.BTFCache, or nil
}

// hasHostBTF reports whether the host's BTF is available, as ModeAuto sees
// it.
func hasHostBTF(opt Options) bool {
	p := hostBTFPath
	if opt.KernelBTF != "" {
		p = opt.KernelBTF
	}
	_, err := os.Stat(p)
	return err == nil
}

// hostBTFDigest is the hex sha256 of the host's BTF, or "" when it cannot
// be read.
func hostBTFDigest(opt Options) string {
	p := hostBTFPath
	if opt.KernelBTF != "" {
		p = opt.KernelBTF
	}
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// resolveMode turns ModeAuto into the mode to use for a.
func resolveMode(a *Artifact, opt Options) (Mode, error) {
	switch opt.Mode {
	case ModeHostBTF, ModeMinBTF, ModeRelocated:
		return opt.Mode, nil
	case ModeAuto, "":
	default:
		return "", fmt.Errorf("mode %q: want %s, %s, %s or %s", opt.Mode, ModeAuto, ModeHostBTF, ModeMinBTF, ModeRelocated)
	}
	switch {
	case len(a.Relocated) > 0 && a.KernelBTF != "" && hostBTFDigest(opt) == a.KernelBTF:
		return ModeRelocated, nil
	case hasHostBTF(opt) && len(a.Object) > 0:
		return ModeHostBTF, nil
	case len(a.MinBTF) > 0 && len(a.Object) > 0:
		return ModeMinBTF, nil
	case len(a.Relocated) > 0:
		return ModeRelocated, nil
	case len(a.Object) > 0:
		// Without any BTF, only an object without CO-RE relocations
		// loads: let the load say so.
		return ModeHostBTF, nil
	}
	return "", errors.New("the artifact has no object")
}

// emptyKernelTypes is BTF that no CO-RE relocation can match: ModeRelocated
// gives it to cilium/ebpf as the kernel's types, so that it never reads the
// host's BTF for CO-RE (the pre-relocated object has no relocations left).
func emptyKernelTypes() (*btf.Spec, error) {
	b, err := btf.NewBuilder([]btf.Type{&btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}}, nil)
	if err != nil {
		return nil, err
	}
	return b.Spec()
}

// hasCORE reports whether any program of spec has CO-RE relocations.
func hasCORE(spec *ebpf.CollectionSpec) bool {
	for _, ps := range spec.Programs {
		for _, ins := range ps.Instructions {
			if btf.CORERelocationMetadata(&ins) != nil {
				return true
			}
		}
	}
	return false
}

// prepare parses the artifact's object for the mode and applies the
// options.
func prepare(a *Artifact, opt Options) (*prepared, error) {
	mode, err := resolveMode(a, opt)
	if err != nil {
		return nil, err
	}
	p := &prepared{mode: mode, btfCache: opt.BTFCache}
	var obj []byte
	switch mode {
	case ModeHostBTF:
		obj = a.Object
		if opt.KernelBTF != "" {
			spec, err := btf.LoadSpec(opt.KernelBTF)
			if err != nil {
				return nil, fmt.Errorf("kernel BTF %s: %w", opt.KernelBTF, err)
			}
			p.progOpts.KernelTypes = spec
		}
	case ModeMinBTF:
		obj = a.Object
		if len(a.MinBTF) == 0 {
			return nil, errors.New("mode min-btf: the artifact has no minimized BTF")
		}
		spec, err := btf.LoadSpecFromReader(bytes.NewReader(a.MinBTF))
		if err != nil {
			return nil, fmt.Errorf("minimized BTF: %w", err)
		}
		p.progOpts.KernelTypes = spec
	case ModeRelocated:
		obj = a.Relocated
		if len(obj) == 0 {
			return nil, errors.New("mode relocated: the artifact has no pre-relocated object")
		}
		if p.progOpts.KernelTypes, err = emptyKernelTypes(); err != nil {
			return nil, fmt.Errorf("empty kernel types: %w", err)
		}
	}
	if len(obj) == 0 {
		return nil, fmt.Errorf("mode %s: the artifact has no object", mode)
	}
	spec, externs, err := kconfig.LoadSpec(obj)
	if err != nil {
		return nil, fmt.Errorf("parse object: %w", err)
	}
	// Names become pin file names: refuse an object (one that bypassed the
	// server's inspection) with a name that is not a C identifier.
	if err := objname.CheckAll(spec.Programs, spec.Maps); err != nil {
		return nil, fmt.Errorf("object refused: %w", err)
	}
	if externs != nil {
		// .kconfig externs resolved as libbpf resolves them, not by
		// cilium/ebpf (see package kconfig).
		data, err := externs.Values(opt.Kconfig)
		if err != nil {
			return nil, fmt.Errorf("resolve .kconfig: %w", err)
		}
		if err := externs.Apply(spec, data); err != nil {
			return nil, fmt.Errorf("resolve .kconfig: %w", err)
		}
	}
	if mode == ModeHostBTF && p.progOpts.KernelTypes == nil && !hasHostBTF(opt) && hasCORE(spec) {
		return nil, fmt.Errorf("mode host-btf: this host has no %s, and the object has CO-RE relocations: use the artifact's min-btf or relocated files, or Options.KernelBTF", hostBTFPath)
	}
	if err := selectPrograms(spec, opt.Programs); err != nil {
		return nil, err
	}
	if err := applySet(spec, opt.Set); err != nil {
		return nil, err
	}
	if err := applyMaxEntries(spec, opt.MaxEntries); err != nil {
		return nil, err
	}
	p.spec = spec
	return p, nil
}

// objects are a set's maps, programs and attachments while Load or Swap
// works on them.
type objects struct {
	spec   *ebpf.CollectionSpec
	maps   map[string]*ebpf.Map
	progs  map[string]*ebpf.Program
	attach map[string]*attachment
}

// close releases every handle: whatever is not pinned goes away.
func (o *objects) close() {
	if o == nil {
		return
	}
	for _, a := range o.attach {
		a.Close()
	}
	for _, p := range o.progs {
		p.Close()
	}
	for _, m := range o.maps {
		m.Close()
	}
	o.attach, o.progs, o.maps = nil, nil, nil
}

// loadObjects creates the maps of p (reusing the maps in reuse, by name)
// and then loads its programs one at a time against them, so that each
// program that fails is reported on its own.
func loadObjects(ctx context.Context, p *prepared, reuse map[string]*ebpf.Map) (_ *objects, err error) {
	spec := p.spec
	o := &objects{
		spec:   spec,
		maps:   make(map[string]*ebpf.Map),
		progs:  make(map[string]*ebpf.Program),
		attach: make(map[string]*attachment),
	}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	cache := p.btfCache
	if cache == nil {
		cache = btf.NewCache()
	}

	// The maps, with the globals' contents, first. Program arrays are
	// filled once the programs are loaded. The globals' values go into
	// the maps' contents here rather than through the spec's Variables,
	// for which cilium/ebpf would mmap the maps, keeping them alive until
	// the garbage collector runs.
	mapsOnly := &ebpf.CollectionSpec{
		Maps:      make(map[string]*ebpf.MapSpec, len(spec.Maps)),
		Types:     spec.Types,
		ByteOrder: spec.ByteOrder,
	}
	progArrays := make(map[string][]ebpf.MapKV)
	for name, ms := range spec.Maps {
		ms = ms.Copy()
		if ms.Type == ebpf.ProgramArray && len(ms.Contents) > 0 {
			progArrays[name] = ms.Contents
			ms.Contents = nil
		}
		if err := setDataSection(ms, name, spec.Variables); err != nil {
			return nil, err
		}
		mapsOnly.Maps[name] = ms
	}
	coll, err := ebpf.NewCollectionWithOptions(mapsOnly, ebpf.CollectionOptions{MapReplacements: reuse, Cache: cache})
	if err != nil {
		return nil, fmt.Errorf("create maps: %w", err)
	}
	for name := range mapsOnly.Maps {
		o.maps[name] = coll.DetachMap(name)
	}
	coll.Close()

	var errs []error
	for _, name := range slices.Sorted(maps.Keys(spec.Programs)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ps := spec.Programs[name]
		prog, err := loadProgram(name, ps, o.maps, p.progOpts, cache)
		if err != nil {
			errs = append(errs, &ProgramError{Program: name, Section: ps.SectionName, Op: "load", Err: err})
			continue
		}
		o.progs[name] = prog
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	for name, kvs := range progArrays {
		for _, kv := range kvs {
			progName, ok := kv.Value.(string)
			if !ok || o.progs[progName] == nil {
				continue // not selected
			}
			if err := o.maps[name].Update(kv.Key, o.progs[progName], ebpf.UpdateAny); err != nil {
				return nil, fmt.Errorf("program array %s: put %s: %w", name, progName, err)
			}
		}
	}
	return o, nil
}

// setDataSection writes the values of the variables of section name into
// ms's contents, as cilium/ebpf does when it creates the map.
func setDataSection(ms *ebpf.MapSpec, name string, vars map[string]*ebpf.VariableSpec) error {
	var data []byte
	for _, v := range vars {
		if v.SectionName != name {
			continue
		}
		if data == nil {
			if len(ms.Contents) == 0 {
				return nil // filled by cilium/ebpf (.kconfig)
			}
			if len(ms.Contents) != 1 {
				return fmt.Errorf("map %s: %d entries for a data section", name, len(ms.Contents))
			}
			raw, ok := ms.Contents[0].Value.([]byte)
			if !ok {
				return fmt.Errorf("map %s: data section holds %T", name, ms.Contents[0].Value)
			}
			data = slices.Clone(raw)
		}
		end := int(v.Offset) + len(v.Value)
		if end > len(data) {
			return fmt.Errorf("map %s: variable %s exceeds the section", name, v.Name)
		}
		copy(data[v.Offset:end], v.Value)
	}
	if data != nil {
		ms.Contents = []ebpf.MapKV{{Key: uint32(0), Value: data}}
	}
	return nil
}

// loadProgram loads one program of a collection against the collection's
// maps, already created. On failure it retries with the verifier log on to
// report the failing instruction.
func loadProgram(name string, ps *ebpf.ProgramSpec, all map[string]*ebpf.Map, opts ebpf.ProgramOptions, cache *btf.Cache) (*ebpf.Program, error) {
	one := &ebpf.CollectionSpec{
		Maps:     make(map[string]*ebpf.MapSpec),
		Programs: map[string]*ebpf.ProgramSpec{name: ps},
	}
	repl := make(map[string]*ebpf.Map)
	for _, ins := range ps.Instructions {
		ref := ins.Reference()
		if !ins.IsLoadFromMap() || ref == "" || repl[ref] != nil {
			continue
		}
		m, ok := all[ref]
		if !ok {
			return nil, fmt.Errorf("references map %s, which the object does not define", ref)
		}
		ms, err := mapSpecOf(m, ref)
		if err != nil {
			return nil, err
		}
		one.Maps[ref] = ms
		repl[ref] = m
	}
	load := func(opts ebpf.ProgramOptions) (*ebpf.Program, error) {
		coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{Programs: opts, MapReplacements: repl, Cache: cache})
		if err != nil {
			return nil, err
		}
		defer coll.Close()
		return coll.DetachProgram(name), nil
	}
	prog, err := load(opts)
	if err == nil {
		return prog, nil
	}
	var ve *ebpf.VerifierError
	if (!errors.As(err, &ve) || len(ve.Log) == 0) && opts.LogLevel == 0 && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EINVAL)) {
		// Ask the verifier for its reasoning.
		retry := opts
		retry.LogLevel = ebpf.LogLevelBranch
		if _, rerr := load(retry); rerr != nil && errors.As(rerr, &ve) && len(ve.Log) > 0 {
			err = rerr
		}
	}
	switch ps.Type {
	case ebpf.Tracing, ebpf.LSM, ebpf.Extension:
		// Loading these resolves their target and reserves a trampoline:
		// explain the kernel's refusal.
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || isNotSupported(err) || isNotExist(err) {
			return nil, explainHookError("load", hookKind(ps.SectionName), ps.AttachTo, err, probeFeatures())
		}
	}
	if errors.As(err, &ve) {
		// Without cilium/ebpf's "program NAME:" prefix: ProgramError
		// names the program.
		return nil, ve
	}
	return nil, err
}

// mapSpecOf describes an existing map, so that it can replace the map of
// that name in a collection spec.
func mapSpecOf(m *ebpf.Map, name string) (*ebpf.MapSpec, error) {
	info, err := m.Info()
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", name, err)
	}
	return &ebpf.MapSpec{
		Name:       name,
		Type:       m.Type(),
		KeySize:    m.KeySize(),
		ValueSize:  m.ValueSize(),
		MaxEntries: m.MaxEntries(),
		Flags:      info.Flags,
	}, nil
}

// attachAll attaches every program, reporting every failure.
func (o *objects) attachAll(ctx context.Context, opt AttachOptions) error {
	opt.usdt = &usdtState{maps: o.maps, specs: make(map[string]uint32)}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(o.progs)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		ps := o.spec.Programs[name]
		a, err := attachProgram(name, o.progs[name], ps, opt)
		if err != nil {
			errs = append(errs, &ProgramError{Program: name, Section: ps.SectionName, Op: "attach", Err: err})
			continue
		}
		o.attach[name] = a
	}
	return errors.Join(errs...)
}

// needTracefs reports whether attaching o's programs needs tracefs.
func (o *objects) needTracefs() bool {
	for name := range o.progs {
		if needsTracefs(o.spec.Programs[name].SectionName) {
			return true
		}
	}
	return false
}

// pinTo pins every map, program and link of o under dir, which must exist.
// Links that can't be pinned are moved to their attachment's unpinnable
// list, and reported by name in the returned map.
func (o *objects) pinTo(dir string) (unpinned map[string]error, err error) {
	for _, sub := range []string{mapsDir, progsDir, linksDir} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("pin: %w", err)
		}
	}
	for name, m := range o.maps {
		path, err := pinPath(dir, mapsDir, pinName(name))
		if err != nil {
			return nil, fmt.Errorf("pin map %s: %w", name, err)
		}
		if err := m.Pin(path); err != nil {
			return nil, fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	for name, p := range o.progs {
		path, err := pinPath(dir, progsDir, name)
		if err != nil {
			return nil, fmt.Errorf("pin program %s: %w", name, err)
		}
		if err := p.Pin(path); err != nil {
			return nil, fmt.Errorf("pin program %s: %w", name, err)
		}
	}
	unpinned = make(map[string]error)
	for name, a := range o.attach {
		var keep []link.Link
		var keepPins []string
		for i, l := range a.links {
			path, err := pinPath(dir, linksDir, a.pins[i])
			if err == nil {
				err = l.Pin(path)
			}
			if errors.Is(err, ebpf.ErrNotSupported) {
				a.unpinnable = append(a.unpinnable, l)
				unpinned[name] = err
				continue
			}
			if err != nil {
				return nil, &ProgramError{Program: name, Section: o.spec.Programs[name].SectionName, Op: "pin", Err: fmt.Errorf("pin link: %w", err)}
			}
			keep = append(keep, l)
			keepPins = append(keepPins, a.pins[i])
		}
		a.links, a.pins = keep, keepPins
	}
	return unpinned, nil
}

// loaded describes o, pinned under dir.
func (o *objects) loaded(name, revision string, mode Mode, dir string, unpinned map[string]error) (*Loaded, error) {
	l := &Loaded{
		Name:     name,
		Revision: revision,
		Mode:     string(mode),
		Since:    time.Now().UTC().Truncate(time.Millisecond),
		PinDir:   dir,
		Programs: []ProgramState{},
		Maps:     []MapState{},
	}
	for _, pname := range slices.Sorted(maps.Keys(o.progs)) {
		prog := o.progs[pname]
		ps := o.spec.Programs[pname]
		info, err := prog.Info()
		if err != nil {
			return nil, fmt.Errorf("program %s: info: %w", pname, err)
		}
		id, _ := info.ID()
		st := ProgramState{
			Name:    pname,
			Section: ps.SectionName,
			Type:    prog.Type().String(),
			ID:      uint32(id),
			Tag:     info.Tag,
			Pinned:  filepath.Join(dir, progsDir, pname),
		}
		if a := o.attach[pname]; a != nil {
			st.Attached = a.attached()
			st.AttachPoint = a.point
			st.Note = a.note
			for i, lk := range a.links {
				li, err := lk.Info()
				if err != nil {
					return nil, fmt.Errorf("program %s: link info: %w", pname, err)
				}
				st.Links = append(st.Links, LinkState{ID: uint32(li.ID), Pinned: filepath.Join(dir, linksDir, a.pins[i])})
			}
			if len(st.Links) > 0 {
				st.LinkID = st.Links[0].ID
			}
			if err := unpinned[pname]; err != nil {
				st.Error = fmt.Sprintf("attached, but the link can't be pinned on this kernel (%v): it lasts only while this process runs (see Loaded.Close)", err)
			} else if len(a.unpinnable) > 0 {
				st.Error = "attached without a BPF link (this kernel has none for this hook): it can't be pinned and lasts only while this process runs (see Loaded.Close)"
			}
		}
		l.Programs = append(l.Programs, st)
	}
	for _, mname := range slices.Sorted(maps.Keys(o.maps)) {
		m := o.maps[mname]
		info, err := m.Info()
		if err != nil {
			return nil, fmt.Errorf("map %s: info: %w", mname, err)
		}
		id, _ := info.ID()
		l.Maps = append(l.Maps, MapState{
			Name:       mname,
			Type:       m.Type().String(),
			ID:         uint32(id),
			Pinned:     filepath.Join(dir, mapsDir, pinName(mname)),
			MaxEntries: m.MaxEntries(),
		})
	}
	if err := describeTypes(l, o.spec); err != nil {
		return nil, err
	}
	return l, nil
}

// takeUnpinnable moves the attachments that live only while open out of o,
// so that closing o does not detach them.
func (o *objects) takeUnpinnable() []io.Closer {
	var out []io.Closer
	for _, a := range o.attach {
		out = append(out, a.unpinnable...)
		a.unpinnable = nil
	}
	return out
}

// Load loads the artifact a as the set a.Name: it creates its maps, loads
// its programs (opt.Programs, or all), attaches them (unless opt.NoAttach)
// and pins everything under opt.PinDir/NAME, so that it stays loaded after
// the process exits; and it writes the set's state to opt.StateDir/NAME.json.
//
// On any failure nothing is left behind. Programs are loaded one at a time
// and every failing program is reported, as a *ProgramError, joined with
// errors.Join; a verifier rejection includes the tail of the verifier log.
func Load(ctx context.Context, a *Artifact, opt Options) (_ *Loaded, err error) {
	if a == nil {
		return nil, errors.New("load: nil artifact")
	}
	opt = opt.withDefaults()
	if err := checkName(a.Name); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("load %s: %w", a.Name, err)
		}
	}()
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	if err := ensureBPFFS(opt.PinDir); err != nil {
		return nil, err
	}
	statePath := stateFile(opt.StateDir, a.Name)
	if _, err := os.Stat(statePath); err == nil {
		return nil, fmt.Errorf("already loaded (state %s): Unload or Swap it", statePath)
	}
	p, err := prepare(a, opt)
	if err != nil {
		return nil, err
	}

	// Claim the pin directory: a concurrent Load of the same set fails
	// here.
	dir := setDir(opt.PinDir, a.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("already loaded (%s exists): Unload or Swap it", dir)
		}
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()

	objs, err := loadObjects(ctx, p, nil)
	if err != nil {
		return nil, err
	}
	defer objs.close()

	if !opt.NoAttach {
		if objs.needTracefs() {
			if err := ensureTracefs(); err != nil {
				return nil, err
			}
		}
		if err := objs.attachAll(ctx, opt.Attach); err != nil {
			return nil, err
		}
	}
	unpinned, err := objs.pinTo(dir)
	if err != nil {
		return nil, err
	}
	revision := opt.Revision
	if revision == "" {
		revision = a.Revision
	}
	l, err := objs.loaded(a.Name, revision, p.mode, dir, unpinned)
	if err != nil {
		return nil, err
	}
	if err := writeState(opt.StateDir, l); err != nil {
		return nil, err
	}
	l.keep = objs.takeUnpinnable()
	return l, nil
}
