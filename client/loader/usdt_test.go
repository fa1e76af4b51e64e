package loader

import (
	"encoding/binary"
	"testing"
)

// TestParseUSDTArgs: the argument formats of libbpf's parse_usdt_arg for
// x86_64 and arm64 (as gcc and clang emit them).
func TestParseUSDTArgs(t *testing.T) {
	for _, c := range []struct {
		arch, args string
		want       []usdtArg
	}{
		{"amd64", "-8@%rdx -8@8(%rsp) -4@%r8d", []usdtArg{
			{typ: usdtArgReg, regOff: 96, signed: true},
			{typ: usdtArgDeref, valOff: 8, regOff: 152, signed: true},
			{typ: usdtArgReg, regOff: 72, signed: true, bitshift: 32},
		}},
		{"amd64", "4@$71 1@(%rax) -2@-20(%rbp) 8@%rip", []usdtArg{
			{typ: usdtArgConst, valOff: 71, bitshift: 32},
			{typ: usdtArgDeref, regOff: 80, bitshift: 56},
			{typ: usdtArgDeref, valOff: uint64(0xffffffffffffffec), regOff: 32, signed: true, bitshift: 48},
			{typ: usdtArgReg, regOff: 128},
		}},
		{"arm64", "-4@[sp, 96] 8@x4 -8@[x29] 4@5 -4@[x0, -12]", []usdtArg{
			{typ: usdtArgDeref, valOff: 96, regOff: 248, signed: true, bitshift: 32},
			{typ: usdtArgReg, regOff: 32},
			{typ: usdtArgDeref, regOff: 232, signed: true},
			{typ: usdtArgConst, valOff: 5, bitshift: 32},
			{typ: usdtArgDeref, valOff: uint64(0xfffffffffffffff4), regOff: 0, signed: true, bitshift: 32},
		}},
		{"amd64", "", nil},
	} {
		got, err := parseUSDTArgs(c.args, c.arch)
		if err != nil {
			t.Errorf("%s %q: %v", c.arch, c.args, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("%s %q: %d args, want %d", c.arch, c.args, len(got), len(c.want))
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s %q #%d: %+v, want %+v", c.arch, c.args, i, got[i], c.want[i])
			}
		}
	}
	for _, bad := range []struct{ arch, args string }{
		{"amd64", "3@%rax"},          // size
		{"amd64", "8@%xmm0"},         // register
		{"amd64", "8@counter(%rip)"}, // symbol operand: libbpf refuses it too
		{"arm64", "8@[q0]"},
		{"amd64", "1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al 1@%al"},
	} {
		if _, err := parseUSDTArgs(bad.args, bad.arch); err == nil {
			t.Errorf("%s %q: no error", bad.arch, bad.args)
		}
	}
}

func TestUSDTNoteAndSpecLayout(t *testing.T) {
	desc := make([]byte, 24)
	binary.LittleEndian.PutUint64(desc, 0x10a1)
	binary.LittleEndian.PutUint64(desc[8:], 0x2009)
	binary.LittleEndian.PutUint64(desc[16:], 0x4020)
	desc = append(desc, "bpfarm\x00tick\x00-8@%rdx\x00"...)
	n, err := parseUSDTNote(desc, 8, binary.LittleEndian)
	if err != nil || n.loc != 0x10a1 || n.base != 0x2009 || n.sema != 0x4020 || n.provider != "bpfarm" || n.name != "tick" || n.args != "-8@%rdx" {
		t.Fatalf("%+v %v", n, err)
	}
	if _, err := parseUSDTNote(desc[:26], 8, binary.LittleEndian); err == nil {
		t.Error("truncated note accepted")
	}
	b := marshalUSDTSpec([]usdtArg{{valOff: 8, typ: usdtArgDeref, regOff: 152, signed: true, bitshift: 32}}, 7)
	if len(b) != 208 || binary.NativeEndian.Uint64(b) != 8 || binary.NativeEndian.Uint32(b[8:]) != usdtArgDeref ||
		binary.NativeEndian.Uint16(b[12:]) != 152 || b[14] != 1 || b[15] != 32 ||
		binary.NativeEndian.Uint64(b[192:]) != 7 || binary.NativeEndian.Uint16(b[200:]) != 1 {
		t.Fatalf("spec bytes % x", b)
	}
	for _, s := range []string{"/bin/x:p:n", "/a/b:prov:name"} {
		if _, _, _, err := parseUSDTTarget(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"/bin/x:p", ":p:n", "/x:p:", "/a:b:c:d"} {
		if _, _, _, err := parseUSDTTarget(s); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}
