package core

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Program statuses. When several apply, the report gives the first of
// failed, unsupported, poisoned, ok: a failed relocation leaves the rest of
// the report incomplete; a missing kernel feature can't be worked around
// by the program (a poisoned relocation can, with a CO-RE guard), so it is
// the more fundamental answer. Poisoned relocations and missing features
// are listed whatever the status.
const (
	StatusOK       = "ok"
	StatusPoisoned = "poisoned"
	StatusFailed   = "failed"
	// StatusUnsupported: the kernel lacks a map type, program type, attach
	// type, helper, kfunc or attach target the program needs, or the BPF
	// instruction set of its instructions (Reason names each).
	StatusUnsupported = "unsupported"
)

// Result is the outcome of relocating an object for one kernel.
type Result struct {
	// Report tells, per program, whether its CO-RE relocations resolve
	// against the kernel and whether its tracing targets exist there.
	Report Report
	// MinBTF is raw BTF holding only the kernel types and members this
	// object's relocations touch (what bpftool gen min_core_btf produces):
	// relocating against it alone gives the same fixups as against the
	// kernel's full BTF.
	MinBTF []byte
	// Relocated is the ELF object with every CO-RE fixup for this kernel
	// applied in place and its CO-RE relocation records removed from
	// .BTF.ext, so that loaders need no kernel BTF for CO-RE. Everything
	// else is byte-identical to the input.
	Relocated []byte
}

// Report is the relocation report of an object for one kernel.
type Report struct {
	Kernel   string          `json:"kernel"`
	Programs []ProgramReport `json:"programs"`
}

// ProgramReport is the relocation report of one program.
type ProgramReport struct {
	Name    string `json:"name"`
	Section string `json:"section"`
	// Status is "ok" when every relocation resolves or every poisoned one
	// is Guarded (unreachable on this kernel), "poisoned" when a relocation
	// that matches nothing in the kernel can run (the instruction is
	// poisoned, as libbpf does: the verifier rejects the program),
	// "unsupported" when the kernel lacks a feature the program needs
	// (see Needs and Reason) and "failed" when relocation fails. See the
	// Status* constants for the precedence.
	Status string `json:"status"`
	// Error is why relocation failed, on one line.
	Error string `json:"error,omitempty"`
	// Reason names every missing kernel feature, on one line ("; "
	// between them), e.g. "map events: ring buffer (BPF_MAP_TYPE_RINGBUF)
	// is not in this kernel". Empty when nothing is missing.
	Reason string `json:"reason,omitempty"`
	// Relocations is the number of CO-RE relocations.
	Relocations int `json:"relocations"`
	// Poisoned lists every poisoned relocation.
	Poisoned []Poison `json:"poisoned,omitempty"`
	// Targets are the tracing targets the program needs.
	Targets []Target `json:"targets,omitempty"`
	// Ambiguous lists the relocations that failed because several types
	// of the kernel match them with different results.
	Ambiguous []Ambiguity `json:"ambiguous,omitempty"`
	// Needs are the BPF features the program needs: map types, program
	// type, attach type, helpers, and the BPF instruction set when it uses
	// ISA v4 instructions (kfuncs are in Targets).
	Needs []Need `json:"needs,omitempty"`
}

// Poison is a relocation that matched nothing in the kernel.
type Poison struct {
	// Kind is the relocation kind: "field_byte_offset", "type_size",
	// "enumval_value", ...
	Kind string `json:"kind"`
	// Path is the access path in the program's types:
	// "task_struct.real_parent", "sk_buff.cb[2]",
	// "enum bpf_func_id::BPF_FUNC_ringbuf_output", "struct task_struct".
	Path string `json:"path"`
	// Instruction is the raw offset of the poisoned instruction in the
	// program, counted in 8-byte slots as the verifier log numbers them,
	// with the program laid out as cilium/ebpf loads it: its own function
	// first, then the subprograms it calls.
	Instruction int `json:"instruction"`
	// Guarded is set when the poisoned instruction is unreachable with this
	// kernel's CO-RE values: the program checks, with an existence
	// relocation (bpf_core_field_exists, bpf_core_type_exists, ...) or a
	// relocated value, that the branch holding the instruction is not taken
	// on this kernel, so the verifier prunes it and the program loads. See
	// the guard analysis in guard.go for the exact rule.
	Guarded bool `json:"guarded"`
}

// Target is a kernel hook a program attaches to or calls.
type Target struct {
	// Kind is "tracepoint", "raw_tracepoint", "btf_tracepoint", "function"
	// or "kfunc".
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Status is "present", "missing" or "unknown" (the kernel's BTF can't
	// tell, e.g. a kprobe on a function without BTF).
	Status string `json:"status"`
}

// progResult is the outcome of relocating one program.
type progResult struct {
	p       *program
	fixups  []btf.COREFixup // nil if failed
	fx      []Fixup
	err     error
	poisons []Poison
	// ambiguous lists the relocations whose candidate types disagree.
	ambiguous []Ambiguity
}

// Ambiguity is a relocation that several types of the kernel could
// satisfy, with different results (e.g. two definitions of struct
// task_struct with pid at different offsets): libbpf refuses to load the
// program, and so the report calls it failed.
type Ambiguity struct {
	// Kind is the relocation kind, e.g. "field_byte_offset".
	Kind string `json:"kind"`
	// Path is the access path, e.g. "task_struct.pid".
	Path string `json:"path"`
	// Candidates counts the kernel's types of that name and kind.
	Candidates int `json:"candidates"`
	// Instruction is the raw offset of the relocated instruction, as in
	// Poison.
	Instruction int `json:"instruction"`
}

// AmbiguousError reports relocations whose candidates disagree.
type AmbiguousError struct {
	Relocations []Ambiguity
}

func (e *AmbiguousError) Error() string {
	a := e.Relocations[0]
	more := ""
	if n := len(e.Relocations) - 1; n > 0 {
		more = fmt.Sprintf(" (and %d more)", n)
	}
	return fmt.Sprintf("ambiguous relocation: %s %s: the kernel's %d candidate types disagree%s", a.Kind, a.Path, a.Candidates, more)
}

// relocateEach computes the fixups of p's relocations one by one, as libbpf
// does: for each, the candidate types that satisfy it must agree. It
// returns an *AmbiguousError naming every relocation whose candidates
// disagree, or the first other error.
func (o *Object) relocateEach(p *program, targets []*btf.Spec) ([]btf.COREFixup, []Ambiguity, error) {
	fixups := make([]btf.COREFixup, len(p.crs))
	var amb []Ambiguity
	for i, cr := range p.crs {
		f, err := btf.CORERelocate([]*btf.CORERelocation{cr}, targets, o.byteOrder, o.spec.Types.TypeID)
		if err == nil {
			fixups[i] = f[0]
			continue
		}
		r := p.relos[i]
		n := countCandidates(r.local, targets)
		if n < 2 {
			return nil, nil, fmt.Errorf("%s %s: %w", r.kind, r.path, err)
		}
		amb = append(amb, Ambiguity{Kind: r.kind.String(), Path: r.path, Candidates: n, Instruction: r.raw})
	}
	if amb != nil {
		return nil, amb, &AmbiguousError{Relocations: amb}
	}
	return fixups, nil, nil
}

// countCandidates counts the types in targets with local's essential name
// and kind.
func countCandidates(local btf.Type, targets []*btf.Spec) int {
	if local == nil || local.TypeName() == "" {
		return 0
	}
	n := 0
	for _, spec := range targets {
		types, err := spec.AnyTypesByName(essentialName(local.TypeName()))
		if err != nil {
			continue
		}
		for _, t := range types {
			if fmt.Sprintf("%T", t) == fmt.Sprintf("%T", local) {
				n++
			}
		}
	}
	return n
}

// relocate computes the fixups of one program against targets. Call it
// inside Kernel.lookup when targets belong to a Kernel.
func (o *Object) relocate(p *program, targets []*btf.Spec) progResult {
	res := progResult{p: p}
	if len(p.relos) == 0 {
		return res
	}
	fixups, err := btf.CORERelocate(p.crs, targets, o.byteOrder, o.spec.Types.TypeID)
	if err != nil {
		// cilium/ebpf picks one candidate type for all the relocations of a
		// local type, and fails when equally good candidates disagree on
		// any of them. libbpf decides each relocation on its own: do that,
		// and name the relocations whose candidates disagree.
		fixups, res.ambiguous, err = o.relocateEach(p, targets)
		if err != nil {
			res.err = err
			return res
		}
	}
	if len(fixups) != len(p.relos) {
		res.err = fmt.Errorf("%d fixups for %d relocations", len(fixups), len(p.relos))
		return res
	}
	res.fixups = fixups
	for i, r := range p.relos {
		f, err := parseCOREFixup(&fixups[i], r)
		if err != nil {
			res.err, res.fixups, res.fx = err, nil, nil
			return res
		}
		if r.kind == kindTypeIDTarget && !f.Poison {
			t, err := targets[0].TypeByID(btf.TypeID(f.Target))
			if err != nil {
				res.err, res.fixups, res.fx = fmt.Errorf("type_id_target %d: %w", f.Target, err), nil, nil
				return res
			}
			f.Target, f.TargetType = 0, typeString(t)
		}
		res.fx = append(res.fx, f)
	}
	return res
}

// report fills in the program's report entry and guard analysis.
func (res *progResult) report() ProgramReport {
	p := res.p
	pr := ProgramReport{
		Name:        p.spec.Name,
		Section:     p.spec.SectionName,
		Status:      StatusOK,
		Relocations: len(p.relos),
	}
	if res.err != nil {
		pr.Status = StatusFailed
		pr.Error = oneLine(res.err.Error())
		pr.Ambiguous = res.ambiguous
		return pr
	}
	var reach map[int]bool
	for i, f := range res.fx {
		if !f.Poison {
			continue
		}
		if reach == nil {
			reach = p.reachable(res.consts())
		}
		r := p.relos[i]
		pr.Poisoned = append(pr.Poisoned, Poison{
			Kind:        r.kind.String(),
			Path:        r.path,
			Instruction: r.raw,
			Guarded:     !reach[r.raw],
		})
	}
	// A program is poisoned when a poisoned instruction can run: poisons
	// that only sit in code the verifier prunes on this kernel (Guarded)
	// are listed, but the program loads, so it stays ok.
	for _, x := range pr.Poisoned {
		if !x.Guarded {
			pr.Status = StatusPoisoned
		}
	}
	return pr
}

// judge sets the report's Reason from the missing features and targets,
// and its Status to unsupported if any is missing, unless relocation
// failed.
//
// Some missing things are harmless in code the verifier never reaches: a
// call to a missing __weak kfunc, and the ISA v4 instructions an older
// verifier only checks when it reaches them (v4Kind.checkedWhenReached).
// Only the ISA v4 instructions the kernel lacks count (a kernel may lack
// the ISA but not know whether it has gotol: isaSupport.status).
// Reachability is that of the guard analysis, with this kernel's CO-RE
// values and 0 for the address of a missing weak kfunc (the loader's value
// for bpf_ksym_exists()).
func (res *progResult) judge(pr *ProgramReport, feats *features) {
	p := res.p
	var reach map[int]bool
	reached := func(raw int) bool {
		if reach == nil {
			consts := map[int]uint64{}
			if res.err == nil {
				consts = res.consts()
			}
			for raw, fn := range p.weakKfuncLoads {
				if slices.ContainsFunc(pr.Targets, func(t Target) bool {
					return t.Kind == TargetKfunc && t.Name == fn && t.Status == TargetMissing
				}) {
					consts[raw] = 0
				}
			}
			reach = p.reachable(consts)
		}
		return reach[raw]
	}
	var weakReachable func(string) bool
	if len(p.weakKfuncCalls) > 0 {
		weakReachable = func(name string) bool {
			if !p.weakKfunc(name) {
				return true
			}
			for raw, fn := range p.weakKfuncCalls {
				if fn == name && reached(raw) {
					return true
				}
			}
			return false
		}
	}
	needs := pr.Needs
	if i := slices.IndexFunc(needs, func(n Need) bool {
		return n.Kind == NeedInstructionSet && n.Status == TargetMissing
	}); i >= 0 {
		var counted []v4Insn
		for _, in := range p.isaInsns() {
			if feats.isa.status(in.kind) == TargetMissing && (!in.kind.checkedWhenReached() || reached(in.raw)) {
				counted = append(counted, in)
			}
		}
		needs = slices.Clone(needs)
		if len(counted) > 0 {
			needs[i].Instructions = firstOfEachKind(counted)
		} else {
			needs = slices.Delete(needs, i, i+1)
		}
	}
	reasons := unsupportedReasons(needs, pr.Targets, weakReachable)
	pr.Reason = strings.Join(reasons, "; ")
	if len(reasons) > 0 && pr.Status != StatusFailed {
		pr.Status = StatusUnsupported
	}
}

// isaInsns returns the program's instructions that need the BPF ISA v4.
func (p *program) isaInsns() []v4Insn {
	for _, r := range p.needs {
		if r.kind == NeedInstructionSet {
			return r.insns
		}
	}
	return nil
}

// weakKfunc reports whether the program's calls to kfunc name are weak.
func (p *program) weakKfunc(name string) bool {
	for _, fn := range p.weakKfuncCalls {
		if fn == name {
			return true
		}
	}
	return false
}

// consts returns the kernel's values of the program's relocated immediates
// by raw instruction offset.
func (res *progResult) consts() map[int]uint64 {
	out := make(map[int]uint64)
	for i, f := range res.fx {
		if f.Poison {
			continue
		}
		r := res.p.relos[i]
		ins := res.p.insns[res.p.byRaw[r.raw]]
		switch ins.OpCode.Class() {
		case asm.ALUClass, asm.ALU64Class:
			if ins.OpCode.Source() == asm.ImmSource {
				out[r.raw] = f.Target
			}
		case asm.LdClass:
			if ins.OpCode.IsDWordLoad() {
				out[r.raw] = f.Target
			}
		}
	}
	return out
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Relocate relocates the object against kernel k: it reports every
// program's CO-RE status and tracing targets, and produces the minimized
// BTF and the pre-relocated object. It is safe to call concurrently, for
// the same or different kernels.
//
// A program whose relocation fails has its relocated instructions poisoned
// in Relocated (the verifier rejects them if reached), rather than left
// with the offsets of the build's headers.
func (o *Object) Relocate(k *Kernel) (*Result, error) {
	st, err := k.kstate()
	if err != nil {
		return nil, err
	}
	res := &Result{Report: Report{Kernel: k.ID, Programs: []ProgramReport{}}}
	results := make([]progResult, len(o.programs))
	feats, err := k.features(st)
	if err != nil {
		return nil, err
	}
	var marks *markSet
	err = k.lookup(o.lookupNames, func(mods bool) error {
		targets := k.specs(mods)
		for i, p := range o.programs {
			results[i] = o.relocate(p, targets)
			pr := results[i].report()
			var err error
			if pr.Targets, err = resolveTargets(k, p.targets, feats.kfuncTags, mods); err != nil {
				return fmt.Errorf("program %s: targets: %w", p.spec.Name, err)
			}
			pr.Needs = resolveNeeds(feats, p.needs)
			results[i].judge(&pr, feats)
			res.Report.Programs = append(res.Report.Programs, pr)
		}
		marks, err = minimizeBTF(k, st, o.programs, mods)
		return err
	})
	if err != nil {
		return nil, err
	}
	if res.MinBTF, err = marks.build(o.byteOrder); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	if res.Relocated, err = o.patch(results); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	return res, nil
}

// Fixups returns every program's CO-RE fixups against targets (the first
// is vmlinux or a standalone BTF, the others split BTF of modules on top of
// it), by program name, in instruction order. A program whose relocation
// fails has a single Fixup of kind "failed".
//
// Split specs share lazily decoded types with their base: don't use them
// concurrently with other lookups in the same base (a Kernel's specs are
// safe through Relocate).
func (o *Object) Fixups(targets ...*btf.Spec) (map[string][]Fixup, error) {
	if len(targets) == 0 || targets[0] == nil {
		return nil, errors.New("no target BTF")
	}
	out := make(map[string][]Fixup, len(o.programs))
	for _, p := range o.programs {
		res := o.relocate(p, targets)
		switch {
		case res.err != nil:
			out[p.spec.Name] = []Fixup{failedFixup()}
		case res.fx == nil:
			out[p.spec.Name] = []Fixup{}
		default:
			out[p.spec.Name] = res.fx
		}
	}
	return out, nil
}

// Programs returns the names of the object's programs, sorted.
func (o *Object) Programs() []string {
	out := make([]string, 0, len(o.programs))
	for _, p := range o.programs {
		out = append(out, p.spec.Name)
	}
	return out
}

// patch applies the fixups to a copy of the object's ELF and removes the
// CO-RE relocation records from .BTF.ext.
//
// Several programs may share a subprogram: its instructions are patched
// once, and must get the same fixup from every program. A failed program's
// relocated instructions are poisoned, unless another program fixes them.
func (o *Object) patch(results []progResult) ([]byte, error) {
	out := bytes.Clone(o.raw)
	type patchAt struct {
		ins    asm.Instruction
		prog   string
		poison bool
	}
	patches := make(map[int64]patchAt)
	var order []int64
	for _, res := range results {
		p := res.p
		for i, r := range p.relos {
			size := asm.InstructionSize
			if r.dword {
				size *= 2
			}
			orig := out[r.pos : r.pos+int64(size)]
			var ins asm.Instruction
			if err := ins.Unmarshal(bytes.NewReader(orig), o.byteOrder, "linux"); err != nil {
				return nil, fmt.Errorf("program %s: instruction %d: decode: %w", p.spec.Name, r.raw, err)
			}
			if ins.OpCode.IsDWordLoad() != r.dword {
				return nil, fmt.Errorf("program %s: instruction %d: width changed", p.spec.Name, r.raw)
			}
			poison := res.fixups == nil
			if poison {
				ins = poisonInstruction(ins)
			} else if err := res.fixups[i].Apply(&ins); err != nil {
				return nil, fmt.Errorf("program %s: instruction %d: apply %s: %w", p.spec.Name, r.raw, res.fx[i], err)
			}
			prev, seen := patches[r.pos]
			switch {
			case !seen:
				order = append(order, r.pos)
			case poison:
				continue
			case !prev.poison && !sameInstruction(prev.ins, ins, o):
				return nil, fmt.Errorf("programs %s and %s need different fixups for a shared instruction at file offset %d", prev.prog, p.spec.Name, r.pos)
			}
			patches[r.pos] = patchAt{ins, p.spec.Name, poison}
		}
	}
	for _, pos := range order {
		var buf bytes.Buffer
		pa := patches[pos]
		if _, err := pa.ins.Marshal(&buf, o.byteOrder); err != nil {
			return nil, fmt.Errorf("encode instruction at file offset %d: %w", pos, err)
		}
		if int64(buf.Len())+pos > int64(len(out)) {
			return nil, fmt.Errorf("instruction at file offset %d: out of bounds", pos)
		}
		copy(out[pos:], buf.Bytes())
	}
	if o.coreReloLenPos >= 0 {
		o.byteOrder.PutUint32(out[o.coreReloLenPos:], 0)
	}
	return out, nil
}

// poisonInstruction is what CO-RE puts in place of an instruction it can't
// relocate: a call to an invalid helper, or an invalid ld_imm64 of the same
// width.
func poisonInstruction(ins asm.Instruction) asm.Instruction {
	if ins.OpCode.IsDWordLoad() {
		return asm.LoadImm(asm.R10, btf.COREBadRelocationSentinel, asm.DWord)
	}
	return asm.BuiltinFunc(btf.COREBadRelocationSentinel).Call()
}

func sameInstruction(a, b asm.Instruction, o *Object) bool {
	var ab, bb bytes.Buffer
	_, aerr := a.Marshal(&ab, o.byteOrder)
	_, berr := b.Marshal(&bb, o.byteOrder)
	return aerr == nil && berr == nil && bytes.Equal(ab.Bytes(), bb.Bytes())
}
