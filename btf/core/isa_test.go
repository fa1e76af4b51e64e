package core

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// TestScanV4 scans hand-assembled instructions, encoded and decoded again
// as cilium/ebpf reads them from an ELF object (the offset field that
// tells a sign-extending mov or a signed division apart), for the ISA v4
// ones, with their raw offsets (a 64-bit immediate load takes two slots).
func TestScanV4(t *testing.T) {
	insns := asm.Instructions{
		asm.LoadImm(asm.R1, 1<<40, asm.DWord),        // 0, 1: not v4
		asm.LoadMemSX(asm.R2, asm.R10, -8, asm.Byte), // 2
		asm.LoadMem(asm.R2, asm.R10, -8, asm.Byte),   // 3: zero-extending
		asm.MovSX8.Reg(asm.R3, asm.R2),               // 4
		asm.MovSX16.Reg32(asm.R3, asm.R2),            // 5: 32-bit, offset 16
		asm.MovSX32.Reg(asm.R3, asm.R2),              // 6
		asm.MovSX32.Reg32(asm.R3, asm.R2),            // 7: not an encoding v4 accepts
		asm.Mov.Reg(asm.R3, asm.R2),                  // 8
		asm.SDiv.Imm(asm.R3, 3),                      // 9
		asm.Div.Imm(asm.R3, 3),                       // 10
		asm.SMod.Reg32(asm.R3, asm.R2),               // 11
		asm.BSwap(asm.R3, asm.Half),                  // 12
		asm.HostTo(asm.BE, asm.R3, asm.Half),         // 13: BPF_ALU | BPF_END
		asm.LongJump("out"),                          // 14: gotol
		asm.Ja.Label("out"),                          // 15
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),     // 16
		asm.Return(),                                 // 17
	}
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	var decoded asm.Instructions
	for buf.Len() > 0 {
		var ins asm.Instruction
		if err := ins.Unmarshal(&buf, binary.LittleEndian, "linux"); err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, ins)
	}
	var raw []int
	off := 0
	for _, ins := range decoded {
		raw = append(raw, off)
		off += int(ins.Width())
	}
	got := scanV4(decoded, raw)
	want := []v4Insn{{v4LoadSX, 2}, {v4MovSX, 4}, {v4MovSX, 5}, {v4MovSX, 6}, {v4SDiv, 9}, {v4SMod, 11}, {v4BSwap, 12}, {v4Gotol, 14}}
	if !slices.Equal(got, want) {
		t.Errorf("scan:\n got %v\nwant %v\n%s", got, want, decoded)
	}
	first := firstOfEachKind(got)
	wantFirst := []ISAInstruction{
		{"sign-extending load", 2}, {"sign-extending mov", 4}, {"signed division", 9}, {"signed modulo", 11},
		{"unconditional byte swap", 12}, {"32-bit offset jump (gotol)", 14},
	}
	if !slices.Equal(first, wantFirst) {
		t.Errorf("first of each kind:\n got %v\nwant %v", first, wantFirst)
	}
	// A program without them needs nothing of the ISA.
	if got := scanV4(decoded[:1], raw[:1]); len(got) != 0 {
		t.Errorf("no v4: %v", got)
	}
}

// TestISAReason checks the one-line reason of a missing instruction set.
func TestISAReason(t *testing.T) {
	n := Need{Kind: NeedInstructionSet, Name: ISAv4, Instructions: []ISAInstruction{
		{"sign-extending mov", 12}, {"signed division", 30},
	}}
	const want = "BPF ISA v4 instructions (sign-extending mov at insn 12, signed division at insn 30) are not in this kernel"
	if got := n.Reason(); got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// isaBTF builds a kernel BTF out of the markers kernelISAv4 reads.
type isaBTF struct {
	checkMemAccess []string // parameters of check_mem_access; nil: no FUNC
	coerceSX       bool     // FUNC coerce_reg_to_size_sx
	auxMembers     []string // members of struct bpf_insn_access_aux; nil: none
	ldstType       []string // enumerators of enum aarch64_insn_ldst_type; nil: none
	ptRegs         []string // members of struct pt_regs; nil: none
}

// raw returns the BTF, as the kernel's raw vmlinux BTF.
func (m isaBTF) raw(t *testing.T) []byte {
	t.Helper()
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	types := []btf.Type{i32}
	proto := func(params []string) *btf.FuncProto {
		fp := &btf.FuncProto{Return: i32}
		for _, p := range params {
			fp.Params = append(fp.Params, btf.FuncParam{Name: p, Type: i32})
		}
		return fp
	}
	strct := func(name string, members []string) *btf.Struct {
		s := &btf.Struct{Name: name, Size: uint32(4 * len(members))}
		for i, n := range members {
			s.Members = append(s.Members, btf.Member{Name: n, Type: i32, Offset: btf.Bits(32 * i)})
		}
		return s
	}
	if m.checkMemAccess != nil {
		types = append(types, &btf.Func{Name: "check_mem_access", Type: proto(m.checkMemAccess), Linkage: btf.StaticFunc})
	}
	if m.coerceSX {
		types = append(types, &btf.Func{Name: "coerce_reg_to_size_sx", Type: proto([]string{"reg", "size"}), Linkage: btf.StaticFunc})
	}
	if m.auxMembers != nil {
		types = append(types, strct("bpf_insn_access_aux", m.auxMembers))
	}
	if m.ldstType != nil {
		e := &btf.Enum{Name: "aarch64_insn_ldst_type", Size: 4}
		for i, n := range m.ldstType {
			e.Values = append(e.Values, btf.EnumValue{Name: n, Value: uint64(i)})
		}
		types = append(types, e)
	}
	if m.ptRegs != nil {
		types = append(types, strct("pt_regs", m.ptRegs))
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// isaOf decides the ISA v4 support of raw BTF.
func isaOf(t *testing.T, raw []byte) isaSupport {
	t.Helper()
	_, bo, types, strs, err := parseBTFHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := kernelISAv4(types, strs, bo)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKernelISAv4Markers decides the ISA v4 from kernel BTF holding only
// the markers, one combination at a time.
func TestKernelISAv4Markers(t *testing.T) {
	old := []string{"env", "insn_idx", "regno", "off", "bpf_size", "t", "value_regno", "strict_alignment_once"}
	v4 := append(slices.Clone(old), "is_ldsx")
	x86 := []string{"r15", "r14", "ax", "orig_ax", "ip"}
	arm64Old := []string{"AARCH64_INSN_LDST_LOAD_REG_OFFSET", "AARCH64_INSN_LDST_STORE_REL_EX"}
	arm64JIT := append(slices.Clone(arm64Old), "AARCH64_INSN_LDST_SIGNED_LOAD_IMM_OFFSET", "AARCH64_INSN_LDST_SIGNED_LOAD_REG_OFFSET")
	for _, c := range []struct {
		name string
		m    isaBTF
		want string
	}{
		{"x86-64 6.1", isaBTF{checkMemAccess: old, auxMembers: []string{"reg_type", "log"}, ptRegs: x86}, TargetMissing},
		{"x86-64 6.6", isaBTF{checkMemAccess: v4, auxMembers: []string{"reg_type", "log"}, ptRegs: x86}, TargetPresent},
		{"x86-64, check_mem_access inlined, coerce_reg_to_size_sx", isaBTF{coerceSX: true, ptRegs: x86}, TargetPresent},
		{"x86-64, check_mem_access inlined, is_ldsx in bpf_insn_access_aux", isaBTF{auxMembers: []string{"reg_type", "is_ldsx"}, ptRegs: x86}, TargetPresent},
		{"x86-64, no marker", isaBTF{auxMembers: []string{"reg_type", "log"}, ptRegs: x86}, TargetUnknown},
		{"x86-64, no BTF of the verifier", isaBTF{ptRegs: x86}, TargetUnknown},
		{"arm64 6.1", isaBTF{checkMemAccess: old, ldstType: arm64Old}, TargetMissing},
		{"arm64 6.6: verifier, no JIT", isaBTF{checkMemAccess: v4, ldstType: arm64Old}, TargetMissing},
		{"arm64 6.7", isaBTF{checkMemAccess: v4, ldstType: arm64JIT}, TargetPresent},
		{"another architecture", isaBTF{checkMemAccess: v4, ptRegs: []string{"gprs", "orig_gpr2"}}, TargetUnknown},
		{"another architecture 6.1", isaBTF{checkMemAccess: old, ptRegs: []string{"gprs", "orig_gpr2"}}, TargetMissing},
	} {
		checkISA(t, c.name, isaOf(t, c.m.raw(t)), c.want)
	}
}

// checkISA checks the status of every kind of ISA v4 instruction on a
// kernel: want, except for gotol on a verifier without the ISA (a stable
// backport may have brought gotol alone: unknown) unless the JIT lacks
// the ISA (arm64 before 6.7).
func checkISA(t *testing.T, name string, s isaSupport, want string) {
	t.Helper()
	for k := range v4Names {
		w := want
		if k == int(v4Gotol) && s.verifier == TargetMissing && s.jit != TargetMissing {
			w = TargetUnknown
		}
		if got := s.status(v4Kind(k)); got != w {
			t.Errorf("%s: %s: %s, want %s (%+v)", name, v4Names[k], got, w, s)
		}
	}
	insns := []v4Insn{{v4Gotol, 0}, {v4MovSX, 1}}
	if got := s.statusOf(insns); got != want {
		t.Errorf("%s: gotol and sign-extending mov: %s, want %s", name, got, want)
	}
}

// TestKernelISAv4Real decides the ISA v4 on real kernels: Debian's 6.1
// (amd64 and arm64) lacks it, Debian's 6.12 (amd64 and arm64) and the
// host's kernel have it.
func TestKernelISAv4Real(t *testing.T) {
	f := setup(t)
	check := func(name string, raw []byte, want string) {
		t.Helper()
		checkISA(t, name, isaOf(t, raw), want)
	}
	check("host", f.hostBTF, TargetPresent)
	if testing.Short() {
		return
	}
	for series, want := range map[string]string{"6.1": TargetMissing, "6.12": TargetPresent} {
		check("debian "+series+" amd64", debianKernel(t, series).vmlinux, want)
		deb := testenv.DebianKernelArch(t, series, "arm64")
		err := source.Import(context.Background(), deb, source.Options{TempDir: t.TempDir()}, func(k *source.Kernel) error {
			check("debian "+series+" arm64 ("+k.ID.String()+")", k.BTF, want)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// isaSource uses ISA v4 instructions (written as inline assembly, which
// clang assembles whatever its -mcpu): plainly, and behind a CO-RE guard
// that holds from Linux 6.4 (struct bpf_iter_num), where a pre-v4
// verifier prunes the sign-extending mov but still refuses the
// sign-extending load, a new opcode.
const isaSource = `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
char LICENSE[] SEC("license") = "GPL";

SEC("tp/syscalls/sys_enter_getpid")
int movsx(void *ctx)
{
	long x, y = bpf_get_prandom_u32();

	asm volatile("%0 = (s8)%1" : "=r"(x) : "r"(y));
	return x;
}

SEC("tp/syscalls/sys_enter_getpid")
int mixed(void *ctx)
{
	long x = bpf_get_prandom_u32();
	char buf[8] = {};

	asm volatile("%0 s/= 3" : "+r"(x));
	asm volatile("gotol +0");
	asm volatile("%0 = *(s8 *)(%1 + 0)" : "=r"(x) : "r"(buf));
	asm volatile("%0 s/= 3" : "+r"(x));
	return x;
}

SEC("tp/syscalls/sys_enter_getpid")
int gotol(void *ctx)
{
	asm volatile("gotol +0");
	return 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int guarded_movsx(void *ctx)
{
	long x = 0, y = bpf_get_prandom_u32();

	if (bpf_core_type_exists(struct bpf_iter_num))
		asm volatile("%0 = (s8)%1" : "=r"(x) : "r"(y));
	return x;
}

SEC("tp/syscalls/sys_enter_getpid")
int guarded_ldsx(void *ctx)
{
	long x = 0;
	char buf[8] = {};

	if (bpf_core_type_exists(struct bpf_iter_num))
		asm volatile("%0 = *(s8 *)(%1 + 0)" : "=r"(x) : "r"(buf));
	return x;
}

SEC("tp/syscalls/sys_enter_getpid")
int plain(void *ctx)
{
	return (signed char)bpf_get_prandom_u32();
}
`

// TestISAv4Report relocates programs with ISA v4 instructions against
// Debian 6.1 (without the ISA, nor struct bpf_iter_num) and 6.12 (with
// both): the report names the instruction set, and the first instruction
// of each kind at its offset; a sign-extending mov that 6.1's verifier
// prunes doesn't count, a sign-extending load does, and gotol is unknown
// on 6.1 (not a reason).
func TestISAv4Report(t *testing.T) {
	f := setup(t)
	if testing.Short() {
		t.Skip("Debian kernels")
	}
	src := filepath.Join(t.TempDir(), "isa.bpf.c")
	if err := os.WriteFile(src, []byte(isaSource), 0o644); err != nil {
		t.Fatal(err)
	}
	out := src + ".o"
	if _, err := run(f.clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I"+f.dir, "-c", src, "-o", out); err != nil {
		t.Fatal(err)
	}
	obj, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	o, err := LoadObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	// The offsets the report gives are those of the instructions.
	at := func(prog string, kinds ...v4Kind) string {
		t.Helper()
		for _, p := range o.programs {
			if p.spec.Name != prog {
				continue
			}
			var parts []string
			for _, k := range kinds {
				i := slices.IndexFunc(p.isaInsns(), func(in v4Insn) bool { return in.kind == k })
				if i < 0 {
					t.Fatalf("%s: no %s", prog, v4Names[k])
				}
				raw := p.isaInsns()[i].raw
				if got, _ := v4KindOf(p.insns[p.byRaw[raw]]); got != k {
					t.Fatalf("%s: insn %d is %v", prog, raw, p.insns[p.byRaw[raw]])
				}
				parts = append(parts, fmt.Sprintf("%s at insn %d", v4Names[k], raw))
			}
			return "BPF ISA v4 instructions (" + strings.Join(parts, ", ") + ") are not in this kernel"
		}
		t.Fatalf("no program %s", prog)
		return ""
	}
	want := map[string]map[string][2]string{
		"6.1": {
			"movsx":         {StatusUnsupported, at("movsx", v4MovSX)},
			"mixed":         {StatusUnsupported, at("mixed", v4SDiv, v4LoadSX)},
			"guarded_movsx": {StatusOK, ""},
			"guarded_ldsx":  {StatusUnsupported, at("guarded_ldsx", v4LoadSX)},
			"gotol":         {StatusOK, ""},
			"plain":         {StatusOK, ""},
		},
		"6.12": {
			"movsx": {StatusOK, ""}, "mixed": {StatusOK, ""}, "guarded_movsx": {StatusOK, ""},
			"guarded_ldsx": {StatusOK, ""}, "gotol": {StatusOK, ""}, "plain": {StatusOK, ""},
		},
	}
	for _, series := range debianSeries {
		k := debianKernel(t, series).k
		for _, pr := range relocate(t, o, k).Report.Programs {
			w := want[series][pr.Name]
			if pr.Status != w[0] || pr.Reason != w[1] {
				t.Errorf("%s: %s: %s %q, want %s %q", series, pr.Name, pr.Status, pr.Reason, w[0], w[1])
			}
			n := findNeed(pr, NeedInstructionSet, ISAv4)
			if pr.Name == "plain" {
				if n != nil {
					t.Errorf("%s: plain needs %+v", series, n)
				}
				continue
			}
			wantStatus := TargetMissing
			switch {
			case series == "6.12":
				wantStatus = TargetPresent
			case pr.Name == "gotol":
				wantStatus = TargetUnknown
			}
			if n == nil || n.Status != wantStatus || len(n.Instructions) == 0 {
				t.Errorf("%s: %s: instruction set need %+v, want %s", series, pr.Name, n, wantStatus)
			}
		}
	}
}

// BenchmarkISAMarks is the raw pass over a kernel's BTF that reads the
// ISA v4 markers, paid once per kernel at load.
func BenchmarkISAMarks(b *testing.B) {
	f := setup(b)
	_, bo, types, strs, err := parseBTFHeader(f.hostBTF)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := kernelISAv4(types, strs, bo); err != nil {
			b.Fatal(err)
		}
	}
}
