package core

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// Minimized BTF
//
// minimizeBTF keeps, of a kernel's types, exactly what an object's CO-RE
// relocations look at, so that relocating the object against the minimized
// BTF alone gives the same fixups as against the kernel's full BTF (the
// equivalence tests check this for every program). It follows the CO-RE
// engine of cilium/ebpf step by step (coreFindField, coreFindMember,
// coreFindEnumValue, coreAreTypesCompatible, coreTypesMatch), recording the
// target types and members each step reads:
//
//   - a kernel type is kept if it is a candidate (same essential name) for a
//     relocation group and at least one relocation of the group resolves
//     against it, or fails with an error (to fail the same way); candidates
//     that only poison are dropped, as cilium/ebpf treats a candidate that
//     poisons every relocation like no candidate at all;
//   - structs and unions keep their name and size and only the members a
//     field access walks through (including the anonymous members leading
//     to it), with their offsets and bitfield sizes;
//   - a kept member keeps its type shallowly: typedef and qualifier chains,
//     array element and index types, struct/union/enum "shells" (name and
//     size, without members), ints and floats; a pointer keeps its target
//     only if the target is kept anyway or a type-based relocation compares
//     it, and otherwise becomes void * (as bpftool gen min_core_btf does);
//   - enums keep the values enum value relocations use;
//   - type-based relocations keep what the compatibility check compares
//     (through pointers, arrays and function prototypes); type_matches keeps
//     what the (deeper) match compares.
//
// This is the logic of bpftool's btfgen (tools/bpf/bpftool/gen.c), made
// exact for cilium/ebpf's candidate scoring: every candidate that matters is
// kept, members whose "last member" status matters for flexible arrays keep
// it, and failures are kept failing.

// outcome is the result of one relocation against one candidate.
type outcome int

const (
	outOK     outcome = iota // resolves (or: the thing exists)
	outPoison                // no match: poisoned, or 0 for an existence check
	outError                 // relocation error: the program fails
)

// keepInfo records what of a kernel type the minimized BTF keeps.
type keepInfo struct {
	members map[int]bool // struct/union members
	values  map[int]bool // enum values
	follow  bool         // pointer: keep the target
}

// markSet is a set of kept types and parts of types.
type markSet struct {
	keep  map[btf.Type]*keepInfo
	roots []btf.Type
}

func newMarkSet() *markSet { return &markSet{keep: make(map[btf.Type]*keepInfo)} }

func (ms *markSet) info(t btf.Type) (*keepInfo, bool) {
	ki, ok := ms.keep[t]
	if !ok {
		ki = &keepInfo{}
		ms.keep[t] = ki
	}
	return ki, ok
}

// shallow keeps t with what is needed for its kind, size and name:
// typedef and qualifier chains, array element and index types, function
// prototype signatures. Composites are kept without members, pointers
// without their target.
func (ms *markSet) shallow(t btf.Type) {
	for range 64 {
		if t == nil {
			return
		}
		if _, ok := t.(*btf.Void); ok {
			return
		}
		if _, seen := ms.info(t); seen {
			return
		}
		switch v := t.(type) {
		case *btf.Typedef:
			t = v.Type
		case *btf.Const:
			t = v.Type
		case *btf.Volatile:
			t = v.Type
		case *btf.Restrict:
			t = v.Type
		case *btf.TypeTag:
			t = v.Type
		case *btf.Var:
			t = v.Type
		case *btf.Func:
			t = v.Type
		case *btf.Array:
			ms.shallow(v.Index)
			t = v.Type
		case *btf.FuncProto:
			ms.shallow(v.Return)
			for _, p := range v.Params {
				ms.shallow(p.Type)
			}
			return
		default:
			return
		}
	}
}

// member keeps member i of composite c (and c).
func (ms *markSet) member(c btf.Type, i int) {
	ms.shallow(c)
	ki, _ := ms.info(c)
	if ki.members == nil {
		ki.members = make(map[int]bool)
	}
	ki.members[i] = true
	ms.shallow(compositeMembers(c)[i].Type)
}

// value keeps value i of enum e (and e).
func (ms *markSet) value(e *btf.Enum, i int) {
	ms.shallow(e)
	ki, _ := ms.info(e)
	if ki.values == nil {
		ki.values = make(map[int]bool)
	}
	ki.values[i] = true
}

// follow keeps pointer p's target (shallowly).
func (ms *markSet) follow(p *btf.Pointer) {
	ms.shallow(p)
	ki, _ := ms.info(p)
	ki.follow = true
	ms.shallow(p.Target)
}

// merge adds o's marks to ms.
func (ms *markSet) merge(o *markSet) {
	for t, oi := range o.keep {
		ki, _ := ms.info(t)
		for i := range oi.members {
			if ki.members == nil {
				ki.members = make(map[int]bool)
			}
			ki.members[i] = true
		}
		for i := range oi.values {
			if ki.values == nil {
				ki.values = make(map[int]bool)
			}
			ki.values[i] = true
		}
		ki.follow = ki.follow || oi.follow
	}
	for _, r := range o.roots {
		if !slices.Contains(ms.roots, r) {
			ms.roots = append(ms.roots, r)
		}
	}
}

// minimizeBTF computes the marks of all relocations of the given programs
// against kernel k. Call it inside k.lookup.
func minimizeBTF(k *Kernel, st *kernelState, programs []*program, mods bool) (*markSet, error) {
	all := newMarkSet()
	cache := make(map[string][]btf.Type)
	for _, p := range programs {
		// Group relocations by local type, as btf.CORERelocate does.
		var order []btf.Type
		groups := make(map[btf.Type][]*relo)
		for _, r := range p.relos {
			if r.kind == kindTypeIDLocal {
				continue
			}
			if _, ok := groups[r.local]; !ok {
				order = append(order, r.local)
			}
			groups[r.local] = append(groups[r.local], r)
		}
		for _, local := range order {
			name := local.TypeName()
			if name == "" {
				continue // cilium/ebpf refuses to relocate anonymous types
			}
			cands, ok := cache[name]
			if !ok {
				var err error
				if cands, err = k.candidates(st, name, mods); err != nil {
					return nil, fmt.Errorf("kernel %s: candidates for %s: %w", k.ID, name, err)
				}
				cache[name] = cands
			}
			// Candidates whose kept parts are identical give identical
			// fixups, and cilium/ebpf accepts ties that agree: keep one.
			// Not for type_id_target, whose fixup is the candidate's ID.
			dedupe := !slices.ContainsFunc(groups[local], func(r *relo) bool { return r.kind == kindTypeIDTarget })
			kept := make(map[string]bool)
			for _, cand := range cands {
				trial := newMarkSet()
				keep := false
				for _, r := range groups[local] {
					o := evalRelo(k, r, cand, trial)
					if o == outOK || o == outError {
						keep = true
					}
					if o == outError {
						break
					}
				}
				if !keep {
					continue
				}
				if dedupe {
					shape := trial.shape(cand)
					if kept[shape] {
						continue
					}
					kept[shape] = true
				}
				trial.roots = append(trial.roots, cand)
				all.merge(trial)
			}
		}
	}
	return all, nil
}

// evalRelo evaluates relocation r against candidate target type cand the
// way btf.CORERelocate does, recording what it reads in ms.
func evalRelo(k *Kernel, r *relo, cand btf.Type, ms *markSet) outcome {
	switch {
	case r.kind.isField():
		ms.shallow(cand)
		if _, ok := cand.(*btf.Fwd); ok {
			return outPoison
		}
		f, o := findField(r.local, r.acc, cand, ms)
		if o != outOK {
			return o
		}
		return fieldKindCheck(r.kind, f, k.byteOrder())

	case r.kind.isEnum():
		return findEnumValue(r.local, r.acc, cand, ms)

	case r.kind == kindTypeMatches:
		if len(r.acc) != 1 || r.acc[0] != 0 {
			return outError
		}
		return typesMatch(r.local, cand, make(map[[2]btf.Type]bool), ms)

	case r.kind == kindTypeExists || r.kind == kindTypeSize || r.kind == kindTypeIDTarget:
		if len(r.acc) != 1 || r.acc[0] != 0 {
			return outError
		}
		if o := typesCompatible(r.local, cand, make(map[[2]btf.Type]bool), ms); o != outOK {
			return o
		}
		switch r.kind {
		case kindTypeIDTarget:
			if _, err := k.VMLinux.TypeID(cand); err != nil {
				return outPoison // a module's type: cilium/ebpf can't encode its ID
			}
		case kindTypeSize:
			if _, err := btf.Sizeof(r.local); err != nil {
				return outError
			}
			if _, err := btf.Sizeof(cand); err != nil {
				return outError
			}
		}
		return outOK
	}
	return outError
}

func (k *Kernel) byteOrder() binary.ByteOrder {
	if k.state != nil && k.state.byteOrder != nil {
		return k.state.byteOrder
	}
	return binary.LittleEndian
}

// fieldResult is the end of a field access: local and target field types
// and the target's bitfield size.
type fieldResult struct {
	local, target  btf.Type
	targetBitfield btf.Bits
}

// fieldKindCheck mirrors the per-kind checks of coreCalculateFixup for a
// field that was found.
func fieldKindCheck(kind coreKind, f fieldResult, bo binary.ByteOrder) outcome {
	sizeBits := func() outcome {
		if f.targetBitfield > 0 {
			return outOK
		}
		if _, err := btf.Sizeof(f.target); err != nil {
			return outError
		}
		return outOK
	}
	switch kind {
	case kindFieldByteSize:
		if _, err := btf.Sizeof(f.local); err != nil {
			return outError
		}
		if _, err := btf.Sizeof(f.target); err != nil {
			return outError
		}
	case kindFieldLShiftU64:
		if bo == binary.LittleEndian {
			return sizeBits()
		}
		if _, err := btf.Sizeof(f.target); err != nil {
			return outError
		}
	case kindFieldRShiftU64:
		return sizeBits()
	case kindFieldSigned:
		switch btf.UnderlyingType(f.local).(type) {
		case *btf.Enum:
			if _, ok := btf.As[*btf.Enum](f.target); !ok {
				return outError
			}
		case *btf.Int:
			if _, ok := btf.As[*btf.Int](f.target); !ok {
				return outError
			}
		default:
			return outError
		}
	}
	return outOK
}

func isComposite(t btf.Type) bool {
	switch t.(type) {
	case *btf.Struct, *btf.Union:
		return true
	}
	return false
}

// asComposite peels typedefs and qualifiers off t and returns the struct or
// union beneath, like btf.As[composite].
func asComposite(t btf.Type) (btf.Type, bool) {
	u := btf.UnderlyingType(t)
	return u, isComposite(u)
}

// findField mirrors coreFindField.
func findField(localT btf.Type, acc []int, targetT btf.Type, ms *markSet) (fieldResult, outcome) {
	if o := membersCompatible(localT, targetT); o != outOK {
		return fieldResult{}, o
	}
	if len(acc) == 0 {
		return fieldResult{}, outError
	}
	lt, tt := localT, targetT
	var tbf btf.Bits
	if acc[0] != 0 {
		if _, err := btf.Sizeof(lt); err != nil {
			return fieldResult{}, outError
		}
		if _, err := btf.Sizeof(tt); err != nil {
			return fieldResult{}, outError
		}
	}
	var localMaybeFlex, targetMaybeFlex bool
	steps := acc[1:]
	for i, a := range steps {
		switch lu := btf.UnderlyingType(lt).(type) {
		case *btf.Struct, *btf.Union:
			lms := compositeMembers(lu)
			if a >= len(lms) {
				return fieldResult{}, outError
			}
			lm := lms[a]
			if lm.Name == "" {
				c, ok := asComposite(lm.Type)
				if !ok {
					return fieldResult{}, outError
				}
				lt = c
				localMaybeFlex = false
				continue
			}
			tc, ok := asComposite(tt)
			if !ok {
				return fieldResult{}, outPoison
			}
			tm, last, o := findMember(tc, lm.Name, ms)
			if o != outOK {
				return fieldResult{}, o
			}
			lt, localMaybeFlex = lm.Type, a == len(lms)-1
			tt, targetMaybeFlex, tbf = tm.Type, last, tm.BitfieldSize
			if lm.BitfieldSize != 0 || tm.BitfieldSize != 0 {
				if i+1 < len(steps) {
					return fieldResult{}, outError
				}
				if _, err := alignof(lt); err != nil {
					return fieldResult{}, outError
				}
				if _, err := alignof(tt); err != nil {
					return fieldResult{}, outError
				}
			}

		case *btf.Array:
			ta, ok := btf.As[*btf.Array](tt)
			if !ok {
				return fieldResult{}, outPoison
			}
			ms.shallow(tt)
			if lu.Nelems == 0 && !localMaybeFlex {
				return fieldResult{}, outError
			}
			if ta.Nelems == 0 && !targetMaybeFlex {
				return fieldResult{}, outError
			}
			if lu.Nelems > 0 && a >= int(lu.Nelems) {
				return fieldResult{}, outError
			}
			if ta.Nelems > 0 && a >= int(ta.Nelems) {
				return fieldResult{}, outPoison
			}
			lt, localMaybeFlex = lu.Type, false
			tt, targetMaybeFlex, tbf = ta.Type, false, 0
			if a != 0 {
				if _, err := btf.Sizeof(lt); err != nil {
					return fieldResult{}, outError
				}
				if _, err := btf.Sizeof(tt); err != nil {
					return fieldResult{}, outError
				}
			}

		default:
			return fieldResult{}, outError
		}
		if o := membersCompatible(lt, tt); o != outOK {
			return fieldResult{}, o
		}
	}
	return fieldResult{local: lt, target: tt, targetBitfield: tbf}, outOK
}

// membersCompatible mirrors coreAreMembersCompatible.
func membersCompatible(l, t btf.Type) outcome {
	l, t = btf.UnderlyingType(l), btf.UnderlyingType(t)
	if isComposite(l) && isComposite(t) {
		return outOK
	}
	if reflect.TypeOf(l) != reflect.TypeOf(t) {
		return outPoison
	}
	switch lv := l.(type) {
	case *btf.Array, *btf.Pointer, *btf.Float, *btf.Int:
		return outOK
	case *btf.Enum:
		if !essentialNamesMatch(lv.Name, t.(*btf.Enum).Name) {
			return outPoison
		}
		return outOK
	case *btf.Fwd:
		if !essentialNamesMatch(lv.Name, t.(*btf.Fwd).Name) {
			return outPoison
		}
		return outOK
	}
	return outError
}

func essentialNamesMatch(a, b string) bool {
	return a == "" || b == "" || essentialName(a) == essentialName(b)
}

// alignof mirrors cilium/ebpf's alignof.
func alignof(t btf.Type) (int, error) {
	var n int
	switch v := btf.UnderlyingType(t).(type) {
	case *btf.Enum:
		n = int(v.Size)
	case *btf.Int:
		n = int(v.Size)
	case *btf.Array:
		return alignof(v.Type)
	default:
		return 0, fmt.Errorf("can't calculate alignment of %T", v)
	}
	if n <= 0 || n&(n-1) != 0 {
		return 0, fmt.Errorf("alignment %d is not a power of two", n)
	}
	return n, nil
}

// maxResolveDepth is cilium/ebpf's limit on nested anonymous members.
const maxResolveDepth = 32

// findMember mirrors coreFindMember: a breadth-first search for a member
// named name through c and its anonymous struct and union members. It keeps
// the found member and the anonymous members leading to it; if the search
// fails with an error, it keeps everything it visited so that the
// minimized BTF fails the same way.
func findMember(c btf.Type, name string, ms *markSet) (btf.Member, bool, outcome) {
	if name == "" {
		return btf.Member{}, false, outError
	}
	type entry struct {
		c      btf.Type
		off    btf.Bits
		parent int // index of the containing entry, -1 for c
		member int // index of the anonymous member in the parent
	}
	type key struct {
		c   btf.Type
		off btf.Bits
	}
	entries := []entry{{c, 0, -1, -1}}
	visited := make(map[key]bool)
	var visitedIdx []int
	markChain := func(i int) {
		ms.shallow(entries[i].c)
		for e := entries[i]; e.parent >= 0; e = entries[e.parent] {
			ms.member(entries[e.parent].c, e.member)
		}
	}
	fail := func() (btf.Member, bool, outcome) {
		for _, i := range visitedIdx {
			markChain(i)
		}
		return btf.Member{}, false, outError
	}
	for i := 0; i < len(entries); i++ {
		e := entries[i]
		if visited[key{e.c, e.off}] {
			continue
		}
		if len(visited) >= maxResolveDepth {
			return fail()
		}
		visited[key{e.c, e.off}] = true
		visitedIdx = append(visitedIdx, i)

		members := compositeMembers(e.c)
		for j, m := range members {
			if m.Name == name {
				markChain(i)
				ms.member(e.c, j)
				last := j == len(members)-1
				if !last {
					if a, ok := btf.As[*btf.Array](m.Type); ok && a.Nelems == 0 {
						// Keep the member's "not last" status, which
						// decides whether it may be a flexible array.
						ms.member(e.c, len(members)-1)
					}
				}
				m.Offset += e.off
				return m, last, outOK
			}
			if m.Name != "" {
				continue
			}
			comp, ok := asComposite(m.Type)
			if !ok {
				ms.member(e.c, j)
				return fail()
			}
			entries = append(entries, entry{comp, e.off + m.Offset, i, j})
		}
	}
	return btf.Member{}, false, outPoison
}

// findEnumValue mirrors coreFindEnumValue.
func findEnumValue(local btf.Type, acc []int, target btf.Type, ms *markSet) outcome {
	le, ok := btf.As[*btf.Enum](local)
	if !ok || len(acc) != 1 || acc[0] >= len(le.Values) {
		return outError
	}
	te, ok := btf.As[*btf.Enum](target)
	if !ok {
		return outPoison
	}
	want := essentialName(le.Values[acc[0]].Name)
	for j, v := range te.Values {
		if essentialName(v.Name) == want {
			ms.shallow(target)
			ms.value(te, j)
			return outOK
		}
	}
	return outPoison
}

// typesCompatible mirrors coreAreTypesCompatible.
func typesCompatible(l, t btf.Type, visited map[[2]btf.Type]bool, ms *markSet) outcome {
	ms.shallow(t)
	l, t = btf.UnderlyingType(l), btf.UnderlyingType(t)
	if reflect.TypeOf(l) != reflect.TypeOf(t) {
		return outPoison
	}
	if visited[[2]btf.Type{l, t}] {
		return outOK
	}
	visited[[2]btf.Type{l, t}] = true

	switch lv := l.(type) {
	case *btf.Void, *btf.Struct, *btf.Union, *btf.Enum, *btf.Fwd, *btf.Int:
		return outOK
	case *btf.Pointer:
		tv := t.(*btf.Pointer)
		ms.follow(tv)
		return typesCompatible(lv.Target, tv.Target, visited, ms)
	case *btf.Array:
		tv := t.(*btf.Array)
		if o := typesCompatible(lv.Index, tv.Index, visited, ms); o != outOK {
			return o
		}
		return typesCompatible(lv.Type, tv.Type, visited, ms)
	case *btf.FuncProto:
		tv := t.(*btf.FuncProto)
		if o := typesCompatible(lv.Return, tv.Return, visited, ms); o != outOK {
			return o
		}
		if len(lv.Params) != len(tv.Params) {
			return outPoison
		}
		for i, p := range lv.Params {
			if o := typesCompatible(p.Type, tv.Params[i].Type, visited, ms); o != outOK {
				return o
			}
		}
		return outOK
	}
	return outError
}

// fwdMatches mirrors Fwd.matches.
func fwdMatches(f *btf.Fwd, t btf.Type) bool {
	if _, ok := btf.As[*btf.Struct](t); ok && f.Kind == btf.FwdStruct {
		return true
	}
	if _, ok := btf.As[*btf.Union](t); ok && f.Kind == btf.FwdUnion {
		return true
	}
	return false
}

// typesMatch mirrors coreTypesMatch.
func typesMatch(l, t btf.Type, visited map[[2]btf.Type]bool, ms *markSet) outcome {
	ms.shallow(t)
	l, t = btf.UnderlyingType(l), btf.UnderlyingType(t)
	if !essentialNamesMatch(l.TypeName(), t.TypeName()) {
		return outPoison
	}
	if reflect.TypeOf(l) != reflect.TypeOf(t) {
		return outPoison
	}
	if visited[[2]btf.Type{l, t}] {
		return outOK
	}
	visited[[2]btf.Type{l, t}] = true

	switch lv := l.(type) {
	case *btf.Void:
		return outOK
	case *btf.Fwd:
		if t.(*btf.Fwd).Kind != lv.Kind {
			return outPoison
		}
		return outOK
	case *btf.Enum:
		tv := t.(*btf.Enum)
		if lv.Size != tv.Size || len(lv.Values) > len(tv.Values) {
			return outPoison
		}
		kept := make(map[int]bool)
	values:
		for _, v := range lv.Values {
			for j, tval := range tv.Values {
				if essentialNamesMatch(v.Name, tval.Name) {
					ms.value(tv, j)
					kept[j] = true
					continue values
				}
			}
			return outPoison
		}
		// The minimized enum must still have at least as many values.
		for j := 0; len(kept) < len(lv.Values) && j < len(tv.Values); j++ {
			if !kept[j] {
				ms.value(tv, j)
				kept[j] = true
			}
		}
		return outOK
	case *btf.Struct, *btf.Union:
		lms, tms := compositeMembers(l), compositeMembers(t)
		if len(lms) > len(tms) {
			return outPoison
		}
		byName := make(map[string]int, len(tms))
		for j, m := range tms {
			byName[m.Name] = j
		}
		kept := make(map[int]bool)
		for _, lm := range lms {
			j, ok := byName[lm.Name]
			if !ok {
				return outPoison
			}
			ms.member(t, j)
			kept[j] = true
			if o := typesMatch(lm.Type, tms[j].Type, visited, ms); o != outOK {
				return o
			}
		}
		for j := 0; len(kept) < len(lms) && j < len(tms); j++ {
			if !kept[j] {
				ms.member(t, j)
				kept[j] = true
			}
		}
		return outOK
	case *btf.Int:
		tv := t.(*btf.Int)
		if lv.Size != tv.Size || (lv.Encoding == btf.Signed) != (tv.Encoding == btf.Signed) {
			return outPoison
		}
		return outOK
	case *btf.Pointer:
		tv := t.(*btf.Pointer)
		ms.follow(tv)
		if f, ok := btf.As[*btf.Fwd](lv.Target); ok && fwdMatches(f, tv.Target) {
			return outOK
		}
		if f, ok := btf.As[*btf.Fwd](tv.Target); ok && fwdMatches(f, lv.Target) {
			return outOK
		}
		return typesMatch(lv.Target, tv.Target, visited, ms)
	case *btf.Array:
		tv := t.(*btf.Array)
		if lv.Nelems != tv.Nelems {
			return outPoison
		}
		return typesMatch(lv.Type, tv.Type, visited, ms)
	case *btf.FuncProto:
		tv := t.(*btf.FuncProto)
		if len(lv.Params) != len(tv.Params) {
			return outPoison
		}
		for i, p := range lv.Params {
			if o := typesMatch(p.Type, tv.Params[i].Type, visited, ms); o != outOK {
				return o
			}
		}
		return typesMatch(lv.Return, tv.Return, visited, ms)
	}
	return outError
}

// shape describes what of t and the types below it ms keeps, so that two
// candidates with the same shape relocate the same way.
func (ms *markSet) shape(t btf.Type) string {
	var b strings.Builder
	ids := make(map[btf.Type]int)
	var walk func(t btf.Type)
	walk = func(t btf.Type) {
		if id, ok := ids[t]; ok {
			fmt.Fprintf(&b, "#%d", id)
			return
		}
		ids[t] = len(ids)
		ki := ms.keep[t]
		if ki == nil {
			ki = &keepInfo{}
		}
		fmt.Fprintf(&b, "(%T %q", t, t.TypeName())
		switch v := t.(type) {
		case *btf.Struct, *btf.Union:
			size, _ := btf.Sizeof(v)
			fmt.Fprintf(&b, " %d", size)
			for i, m := range compositeMembers(v) {
				if ki.members[i] {
					fmt.Fprintf(&b, " [%q %d %d ", m.Name, m.Offset, m.BitfieldSize)
					walk(m.Type)
					b.WriteString("]")
				}
			}
		case *btf.Enum:
			fmt.Fprintf(&b, " %d %v", v.Size, v.Signed)
			for i, val := range v.Values {
				if ki.values[i] {
					fmt.Fprintf(&b, " %q=%d", val.Name, val.Value)
				}
			}
		case *btf.Int:
			fmt.Fprintf(&b, " %d %v", v.Size, v.Encoding)
		case *btf.Float:
			fmt.Fprintf(&b, " %d", v.Size)
		case *btf.Fwd:
			fmt.Fprintf(&b, " %v", v.Kind)
		case *btf.Pointer:
			// Field relocations ignore what pointers point to.
			if ki.follow {
				walk(v.Target)
			}
		case *btf.Array:
			fmt.Fprintf(&b, " %d ", v.Nelems)
			walk(v.Index)
			walk(v.Type)
		case *btf.FuncProto:
			walk(v.Return)
			for _, p := range v.Params {
				walk(p.Type)
			}
		case *btf.Typedef:
			walk(v.Type)
		case *btf.Const:
			walk(v.Type)
		case *btf.Volatile:
			walk(v.Type)
		case *btf.Restrict:
			walk(v.Type)
		case *btf.TypeTag:
			walk(v.Type)
		}
		b.WriteString(")")
	}
	walk(t)
	return b.String()
}

// build copies the marked types into new types holding only what is marked
// and marshals them as standalone BTF.
func (ms *markSet) build(bo binary.ByteOrder) ([]byte, error) {
	copies := make(map[btf.Type]btf.Type)
	var copyOf func(t btf.Type) btf.Type
	copyOf = func(t btf.Type) btf.Type {
		if t == nil {
			return (*btf.Void)(nil)
		}
		if c, ok := copies[t]; ok {
			return c
		}
		ki := ms.keep[t]
		if ki == nil {
			ki = &keepInfo{}
		}
		var out btf.Type
		switch v := t.(type) {
		case *btf.Void:
			return (*btf.Void)(nil)
		case *btf.Struct:
			c := &btf.Struct{Name: v.Name, Size: v.Size}
			copies[t] = c
			c.Members = copyMembers(v.Members, ki.members, copyOf)
			return c
		case *btf.Union:
			c := &btf.Union{Name: v.Name, Size: v.Size}
			copies[t] = c
			c.Members = copyMembers(v.Members, ki.members, copyOf)
			return c
		case *btf.Enum:
			c := &btf.Enum{Name: v.Name, Size: v.Size, Signed: v.Signed}
			for i, val := range v.Values {
				if ki.values[i] {
					c.Values = append(c.Values, val)
				}
			}
			out = c
		case *btf.Int:
			out = &btf.Int{Name: v.Name, Size: v.Size, Encoding: v.Encoding}
		case *btf.Float:
			out = &btf.Float{Name: v.Name, Size: v.Size}
		case *btf.Fwd:
			out = &btf.Fwd{Name: v.Name, Kind: v.Kind}
		case *btf.Typedef:
			c := &btf.Typedef{Name: v.Name}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.Const:
			c := &btf.Const{}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.Volatile:
			c := &btf.Volatile{}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.Restrict:
			c := &btf.Restrict{}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.TypeTag:
			c := &btf.TypeTag{Value: v.Value}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.Pointer:
			c := &btf.Pointer{Target: (*btf.Void)(nil)}
			copies[t] = c
			if _, kept := ms.keep[v.Target]; ki.follow || kept {
				c.Target = copyOf(v.Target)
			}
			return c
		case *btf.Array:
			c := &btf.Array{Nelems: v.Nelems}
			copies[t] = c
			c.Index = copyOf(v.Index)
			c.Type = copyOf(v.Type)
			return c
		case *btf.FuncProto:
			c := &btf.FuncProto{}
			copies[t] = c
			c.Return = copyOf(v.Return)
			for _, p := range v.Params {
				c.Params = append(c.Params, btf.FuncParam{Name: p.Name, Type: copyOf(p.Type)})
			}
			return c
		case *btf.Func:
			c := &btf.Func{Name: v.Name, Linkage: v.Linkage}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.Var:
			c := &btf.Var{Name: v.Name, Linkage: v.Linkage}
			copies[t] = c
			c.Type = copyOf(v.Type)
			return c
		case *btf.Datasec:
			out = &btf.Datasec{Name: v.Name, Size: v.Size}
		default:
			out = &btf.Int{Name: t.TypeName(), Size: 1}
		}
		copies[t] = out
		return out
	}

	roots := make([]btf.Type, 0, len(ms.roots))
	for _, r := range ms.roots {
		roots = append(roots, copyOf(r))
	}
	b, err := btf.NewBuilder(roots, nil)
	if err != nil {
		return nil, fmt.Errorf("minimized BTF: %w", err)
	}
	raw, err := b.Marshal(nil, &btf.MarshalOptions{Order: bo})
	if err != nil {
		return nil, fmt.Errorf("marshal minimized BTF: %w", err)
	}
	return raw, nil
}

func copyMembers(members []btf.Member, keep map[int]bool, copyOf func(btf.Type) btf.Type) []btf.Member {
	var out []btf.Member
	for i, m := range members {
		if keep[i] {
			out = append(out, btf.Member{Name: m.Name, Type: copyOf(m.Type), Offset: m.Offset, BitfieldSize: m.BitfieldSize})
		}
	}
	return out
}
