package core

import (
	"maps"

	"github.com/cilium/ebpf/asm"
)

// A poisoned relocation is Guarded when the poisoned instruction is
// unreachable once the kernel's CO-RE values are in the program: that is
// the dead code the verifier prunes, which is what makes libbpf's poisoning
// of unresolvable relocations safe.
//
// reachable decides this with constant propagation over the program's
// control-flow graph (the program and every subprogram it calls), starting
// from the program's entry with nothing known:
//
//   - every relocated immediate (mov/alu with an immediate, ld_imm64) takes
//     its value for the kernel: an existence check is 0 or 1, an enum value
//     or a field offset its value in this kernel;
//   - constants flow through registers (mov, alu, ld_imm64 of a plain
//     constant) and 8-byte stack spills and fills;
//   - a conditional jump whose operands are both known takes only the
//     branch it takes at run time; otherwise both.
//
// Calls clobber r0-r5 and forget the stack; subprograms are analysed once
// for all their callers (their arguments are the join of all call sites).
// The analysis is sound but not complete: an instruction it finds
// unreachable is unreachable for the verifier too, while the verifier may
// prune more (it tracks ranges and more of the stack), so Guarded=false is
// the conservative answer.

// absVal is a register's abstract value: a known 64-bit constant or unknown.
type absVal struct {
	known bool
	v     uint64
}

// absState is the abstract machine state before an instruction.
type absState struct {
	regs  [asm.R10 + 1]absVal
	stack map[int16]uint64 // known 8-byte spills at r10+offset
}

func (s *absState) clone() *absState {
	c := *s
	c.stack = maps.Clone(s.stack)
	return &c
}

// join merges o into s and reports whether s changed.
func (s *absState) join(o *absState) bool {
	changed := false
	for i := range s.regs {
		if s.regs[i].known && (!o.regs[i].known || o.regs[i].v != s.regs[i].v) {
			s.regs[i] = absVal{}
			changed = true
		}
	}
	for off, v := range s.stack {
		if ov, ok := o.stack[off]; !ok || ov != v {
			delete(s.stack, off)
			changed = true
		}
	}
	return changed
}

// forgetStack drops what is known about [off, off+size) on the stack.
func (s *absState) forgetStack(off int16, size int) {
	for o := range s.stack {
		if int(o) < int(off)+size && int(off) < int(o)+8 {
			delete(s.stack, o)
		}
	}
}

func (s *absState) clobberCall() {
	for r := asm.R0; r <= asm.R5; r++ {
		s.regs[r] = absVal{}
	}
	clear(s.stack)
}

// reachable returns the raw offsets of the program's instructions that are
// reachable given consts, the values of relocated immediates by raw
// offset.
func (p *program) reachable(consts map[int]uint64) map[int]bool {
	in := make(map[int]*absState)
	var work []int
	push := func(pc int, s *absState) {
		if _, ok := p.byRaw[pc]; !ok {
			return
		}
		if cur, ok := in[pc]; ok {
			if cur.join(s) {
				work = append(work, pc)
			}
			return
		}
		in[pc] = s.clone()
		work = append(work, pc)
	}
	push(0, &absState{stack: map[int16]uint64{}})

	for len(work) > 0 {
		pc := work[len(work)-1]
		work = work[:len(work)-1]
		s := in[pc].clone()
		ins := p.insns[p.byRaw[pc]]
		if v, ok := consts[pc]; ok {
			ins.Constant = int64(v)
		}
		next := pc + int(ins.Width())

		switch cls := ins.OpCode.Class(); cls {
		case asm.JumpClass, asm.Jump32Class:
			op := ins.OpCode.JumpOp()
			switch op {
			case asm.Exit:
				continue
			case asm.Call:
				if ins.IsFunctionCall() {
					if callee, ok := p.funcs[ins.Reference()]; ok {
						cs := &absState{stack: map[int16]uint64{}}
						copy(cs.regs[asm.R1:asm.R5+1], s.regs[asm.R1:asm.R5+1])
						push(callee, cs)
					} else if ins.Reference() == "" {
						push(next+int(ins.Constant), &absState{stack: map[int16]uint64{}})
					}
				}
				s.clobberCall()
				push(next, s)
				continue
			case asm.Ja:
				off := int(ins.Offset)
				if cls == asm.Jump32Class {
					off = int(ins.Constant)
				}
				push(next+off, s)
				continue
			case asm.JCOND:
				push(next, s)
				push(next+int(ins.Offset), s)
				continue
			}
			a := s.regs[ins.Dst]
			b := absVal{known: true, v: uint64(ins.Constant)}
			if ins.OpCode.Source() == asm.RegSource {
				b = s.regs[ins.Src]
			}
			if a.known && b.known {
				if jumpTaken(op, a.v, b.v, cls == asm.Jump32Class) {
					push(next+int(ins.Offset), s)
				} else {
					push(next, s)
				}
				continue
			}
			push(next+int(ins.Offset), s)
			push(next, s)
			continue

		case asm.ALUClass, asm.ALU64Class:
			s.regs[ins.Dst] = evalALU(ins, s)

		case asm.LdClass:
			if ins.OpCode.IsDWordLoad() {
				s.regs[ins.Dst] = absVal{}
				if _, known := consts[pc]; known || ins.Src == asm.R0 {
					s.regs[ins.Dst] = absVal{known: true, v: uint64(ins.Constant)}
				}
			} else {
				// Legacy packet access: r0 is the result, r1-r5 are clobbered.
				s.clobberCall()
			}

		case asm.LdXClass:
			s.regs[ins.Dst] = absVal{}
			if ins.Src == asm.R10 && ins.OpCode.Mode() == asm.MemMode && ins.OpCode.Size() == asm.DWord {
				if v, ok := s.stack[ins.Offset]; ok {
					s.regs[ins.Dst] = absVal{known: true, v: v}
				}
			}

		case asm.StClass, asm.StXClass:
			if ins.OpCode.Mode() == asm.AtomicMode {
				s.regs[ins.Src] = absVal{}
				s.regs[asm.R0] = absVal{}
				clear(s.stack)
				break
			}
			if ins.Dst != asm.R10 {
				// A store through another pointer may write to the stack.
				clear(s.stack)
				break
			}
			size := map[asm.Size]int{asm.DWord: 8, asm.Word: 4, asm.Half: 2, asm.Byte: 1}[ins.OpCode.Size()]
			s.forgetStack(ins.Offset, max(size, 1))
			if size == 8 {
				val := absVal{known: true, v: uint64(ins.Constant)}
				if cls == asm.StXClass {
					val = s.regs[ins.Src]
				}
				if val.known {
					s.stack[ins.Offset] = val.v
				}
			}
		}
		push(next, s)
	}

	out := make(map[int]bool, len(in))
	for pc := range in {
		out[pc] = true
	}
	return out
}

// evalALU computes the abstract result of an ALU instruction.
func evalALU(ins asm.Instruction, s *absState) absVal {
	is32 := ins.OpCode.Class() == asm.ALUClass
	op := ins.OpCode.ALUOp()
	dst := s.regs[ins.Dst]
	src := absVal{known: true, v: uint64(ins.Constant)}
	if ins.OpCode.Source() == asm.RegSource {
		src = s.regs[ins.Src]
	}
	if op == asm.Mov {
		if !src.known {
			return absVal{}
		}
		if is32 {
			return absVal{known: true, v: uint64(uint32(src.v))}
		}
		return src
	}
	if op == asm.Neg {
		if !dst.known {
			return absVal{}
		}
		if is32 {
			return absVal{known: true, v: uint64(uint32(-int32(dst.v)))}
		}
		return absVal{known: true, v: uint64(-int64(dst.v))}
	}
	if !dst.known || !src.known {
		return absVal{}
	}
	a, b := dst.v, src.v
	shiftMask := uint64(63)
	if is32 {
		a, b = uint64(uint32(a)), uint64(uint32(b))
		shiftMask = 31
	}
	var r uint64
	switch op {
	case asm.Add:
		r = a + b
	case asm.Sub:
		r = a - b
	case asm.Mul:
		r = a * b
	case asm.Div:
		if b != 0 {
			r = a / b
		}
	case asm.Mod:
		r = a
		if b != 0 {
			r = a % b
		}
	case asm.Or:
		r = a | b
	case asm.And:
		r = a & b
	case asm.Xor:
		r = a ^ b
	case asm.LSh:
		r = a << (b & shiftMask)
	case asm.RSh:
		r = a >> (b & shiftMask)
	case asm.ArSh:
		if is32 {
			r = uint64(uint32(int32(uint32(a)) >> (b & shiftMask)))
		} else {
			r = uint64(int64(a) >> (b & shiftMask))
		}
	default:
		return absVal{}
	}
	if is32 {
		r = uint64(uint32(r))
	}
	return absVal{known: true, v: r}
}

// jumpTaken evaluates a conditional jump on known operands.
func jumpTaken(op asm.JumpOp, a, b uint64, is32 bool) bool {
	sa, sb := int64(a), int64(b)
	if is32 {
		a, b = uint64(uint32(a)), uint64(uint32(b))
		sa, sb = int64(int32(uint32(a))), int64(int32(uint32(b)))
	}
	switch op {
	case asm.JEq:
		return a == b
	case asm.JNE:
		return a != b
	case asm.JGT:
		return a > b
	case asm.JGE:
		return a >= b
	case asm.JLT:
		return a < b
	case asm.JLE:
		return a <= b
	case asm.JSet:
		return a&b != 0
	case asm.JSGT:
		return sa > sb
	case asm.JSGE:
		return sa >= sb
	case asm.JSLT:
		return sa < sb
	case asm.JSLE:
		return sa <= sb
	}
	return false
}
