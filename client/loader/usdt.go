package loader

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// hasBPFCookie tells whether uprobes can carry a BPF cookie; it is also
// how package kconfig sets LINUX_HAS_BPF_COOKIE, which decides how
// usdt.bpf.h finds a site's spec.
func hasBPFCookie() bool {
	return features.HaveProgramHelper(ebpf.TracePoint, asm.FnGetAttachCookie) == nil
}

// USDT (SystemTap-style user statically defined tracing) probes, attached
// as libbpf's usdt.c does: the target binary's .note.stapsdt notes give
// each probe site's address, semaphore and argument locations; every site
// gets a uprobe whose BPF cookie is the id of its argument spec in the map
// __bpf_usdt_specs, which usdt.bpf.h's bpf_usdt_arg() reads.

// Names and sizes fixed by usdt.bpf.h (libbpf 1.1 to 1.5 share them).
const (
	usdtSpecsMap   = "__bpf_usdt_specs"
	usdtIPMap      = "__bpf_usdt_ip_to_spec_id"
	usdtMaxArgs    = 12                // BPF_USDT_MAX_ARG_CNT
	usdtArgSize    = 16                // struct __bpf_usdt_arg_spec
	usdtSpecSize   = 12*16 + 8 + 2 + 6 // struct __bpf_usdt_spec, padded to 8
	usdtNoteSec    = ".note.stapsdt"
	usdtBaseSec    = ".stapsdt.base"
	usdtNoteOwner  = "stapsdt"
	usdtNoteType   = 3
	usdtArgConst   = 0 // BPF_USDT_ARG_CONST
	usdtArgReg     = 1 // BPF_USDT_ARG_REG
	usdtArgDeref   = 2 // BPF_USDT_ARG_REG_DEREF
	usdtMaxSpecCnt = 256
)

// usdtState allocates spec ids across the programs of one set, which share
// the __weak usdt.bpf.h maps.
type usdtState struct {
	maps  map[string]*ebpf.Map
	specs map[string]uint32 // marshalled spec → id
}

// usdtArg is struct __bpf_usdt_arg_spec.
type usdtArg struct {
	valOff   uint64
	typ      uint32
	regOff   int16
	signed   bool
	bitshift int8
}

// usdtSite is one probe site of a binary.
type usdtSite struct {
	absIP, relIP, semaOff uint64
	args                  string
	spec                  []usdtArg
}

// parseUSDTTarget splits a usdt section's target PATH:PROVIDER:NAME.
func parseUSDTTarget(s string) (path, provider, name string, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("usdt target %q: want PATH:PROVIDER:NAME", s)
	}
	return parts[0], parts[1], parts[2], nil
}

// usdtSites reads the probe sites of provider:name in the ELF file path.
func usdtSites(path, provider, name, goarch string) ([]usdtSite, bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	notes := f.Section(usdtNoteSec)
	if notes == nil || notes.Type != elf.SHT_NOTE {
		return nil, false, fmt.Errorf("%s has no %s section: no USDT probes", path, usdtNoteSec)
	}
	var base uint64
	if s := f.Section(usdtBaseSec); s != nil {
		base = s.Addr
	}
	data, err := notes.Data()
	if err != nil {
		return nil, false, fmt.Errorf("%s: %s: %w", path, usdtNoteSec, err)
	}
	ptr := 8
	if f.Class == elf.ELFCLASS32 {
		ptr = 4
	}
	var sites []usdtSite
	for off := 0; off+12 <= len(data); {
		namesz := int(f.ByteOrder.Uint32(data[off:]))
		descsz := int(f.ByteOrder.Uint32(data[off+4:]))
		typ := f.ByteOrder.Uint32(data[off+8:])
		nameOff := off + 12
		descOff := nameOff + align4(namesz)
		next := descOff + align4(descsz)
		if namesz < 0 || descsz < 0 || descOff > len(data) || descOff+descsz > len(data) {
			return nil, false, fmt.Errorf("%s: %s: truncated note", path, usdtNoteSec)
		}
		owner := strings.TrimRight(string(data[nameOff:nameOff+namesz]), "\x00")
		desc := data[descOff : descOff+descsz]
		off = next
		if owner != usdtNoteOwner || typ != usdtNoteType {
			continue
		}
		n, err := parseUSDTNote(desc, ptr, f.ByteOrder)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %s: %w", path, usdtNoteSec, err)
		}
		if n.provider != provider || n.name != name {
			continue
		}
		// The prelink adjustment: the note records the link-time
		// address of .stapsdt.base.
		abs := n.loc
		if base != 0 {
			abs += base - n.base
		}
		seg := findSegment(f, abs)
		if seg == nil || seg.Flags&elf.PF_X == 0 {
			return nil, false, fmt.Errorf("%s: USDT %s:%s at %#x is not in an executable segment", path, provider, name, abs)
		}
		site := usdtSite{absIP: abs, relIP: abs - seg.Vaddr + seg.Off, args: n.args}
		if n.sema != 0 {
			seg := findSegment(f, n.sema)
			if seg == nil || seg.Flags&elf.PF_X != 0 {
				return nil, false, fmt.Errorf("%s: USDT %s:%s semaphore at %#x is not in a data segment", path, provider, name, n.sema)
			}
			site.semaOff = n.sema - seg.Vaddr + seg.Off
		}
		if site.spec, err = parseUSDTArgs(n.args, goarch); err != nil {
			return nil, false, fmt.Errorf("%s: USDT %s:%s: %w", path, provider, name, err)
		}
		sites = append(sites, site)
	}
	if len(sites) == 0 {
		return nil, false, fmt.Errorf("%s has no USDT probe %s:%s", path, provider, name)
	}
	return sites, f.Type == elf.ET_DYN, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

type usdtNote struct {
	loc, base, sema      uint64
	provider, name, args string
}

// parseUSDTNote is libbpf's parse_usdt_note.
func parseUSDTNote(desc []byte, ptr int, bo binary.ByteOrder) (usdtNote, error) {
	var n usdtNote
	if len(desc) < 3*ptr+3 {
		return n, errors.New("note too short")
	}
	addr := func(i int) uint64 {
		if ptr == 4 {
			return uint64(bo.Uint32(desc[i*4:]))
		}
		return bo.Uint64(desc[i*8:])
	}
	n.loc, n.base, n.sema = addr(0), addr(1), addr(2)
	fields := bytes.SplitN(desc[3*ptr:], []byte{0}, 4)
	if len(fields) < 3 || len(fields[1]) == 0 {
		return n, errors.New("note without provider, name or arguments")
	}
	n.provider, n.name = string(fields[0]), string(fields[1])
	if a := string(fields[2]); a != "" && a[0] != ':' {
		n.args = a
	}
	return n, nil
}

// findSegment returns the PT_LOAD segment holding vaddr.
func findSegment(f *elf.File, vaddr uint64) *elf.ProgHeader {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Memsz {
			return &p.ProgHeader
		}
	}
	return nil
}

// Argument location formats, as libbpf's parse_usdt_arg matches them.
var (
	x86DerefOff = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*([-+]?\d+)\s*\(\s*%([^)]{1,15}?)\s*\)\s*`)
	x86Deref    = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*\(\s*%([^)]{1,15}?)\s*\)\s*`)
	x86Reg      = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*%(\S{1,15})\s*`)
	x86Const    = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*\$([-+]?\d+)\s*`)
	a64DerefOff = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*\[\s*([a-z0-9]{1,15})\s*,\s*([-+]?\d+)\s*\]\s*`)
	a64Deref    = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*\[\s*([a-z0-9]{1,15})\s*\]\s*`)
	a64Const    = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*([-+]?\d+)\s*`)
	a64Reg      = regexp.MustCompile(`^\s*(-?\d+)\s*@\s*([a-z0-9]{1,15})\s*`)
)

// x86RegOffsets are the offsets in struct pt_regs (x86_64) of the registers
// an argument may name, by every name of each.
var x86RegOffsets = func() map[string]int16 {
	m := make(map[string]int16)
	for _, r := range []struct {
		names []string
		off   int16
	}{
		{[]string{"rip", "eip"}, 128},
		{[]string{"rax", "eax", "ax", "al"}, 80},
		{[]string{"rbx", "ebx", "bx", "bl"}, 40},
		{[]string{"rcx", "ecx", "cx", "cl"}, 88},
		{[]string{"rdx", "edx", "dx", "dl"}, 96},
		{[]string{"rsi", "esi", "si", "sil"}, 104},
		{[]string{"rdi", "edi", "di", "dil"}, 112},
		{[]string{"rbp", "ebp", "bp", "bpl"}, 32},
		{[]string{"rsp", "esp", "sp", "spl"}, 152},
		{[]string{"r8", "r8d", "r8w", "r8b"}, 72},
		{[]string{"r9", "r9d", "r9w", "r9b"}, 64},
		{[]string{"r10", "r10d", "r10w", "r10b"}, 56},
		{[]string{"r11", "r11d", "r11w", "r11b"}, 48},
		{[]string{"r12", "r12d", "r12w", "r12b"}, 24},
		{[]string{"r13", "r13d", "r13w", "r13b"}, 16},
		{[]string{"r14", "r14d", "r14w", "r14b"}, 8},
		{[]string{"r15", "r15d", "r15w", "r15b"}, 0},
	} {
		for _, n := range r.names {
			m[n] = r.off
		}
	}
	return m
}()

// regOffset is libbpf's calc_pt_regs_off for goarch.
func regOffset(goarch, name string) (int16, error) {
	switch goarch {
	case "amd64":
		if off, ok := x86RegOffsets[name]; ok {
			return off, nil
		}
	case "arm64":
		// struct user_pt_regs { u64 regs[31]; u64 sp; ... }.
		if name == "sp" {
			return 31 * 8, nil
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(name, "x")); err == nil && strings.HasPrefix(name, "x") && n >= 0 && n < 31 {
			return int16(n * 8), nil
		}
	}
	return 0, fmt.Errorf("unknown register %q", name)
}

// parseUSDTArgs is libbpf's parse_usdt_spec: the note's argument string, one
// SIZE@LOCATION per argument.
func parseUSDTArgs(s, goarch string) ([]usdtArg, error) {
	var args []usdtArg
	for strings.TrimSpace(s) != "" {
		if len(args) >= usdtMaxArgs {
			return nil, fmt.Errorf("more than %d arguments", usdtMaxArgs)
		}
		a, n, err := parseUSDTArg(s, goarch)
		if err != nil {
			return nil, fmt.Errorf("argument #%d %q: %w", len(args)+1, strings.Fields(s)[0], err)
		}
		args = append(args, a)
		s = s[n:]
	}
	return args, nil
}

func parseUSDTArg(s, goarch string) (usdtArg, int, error) {
	var a usdtArg
	var m []string
	var reg string
	switch goarch {
	case "amd64":
		switch {
		case match(&m, x86DerefOff, s):
			a.typ, reg = usdtArgDeref, m[3]
			a.valOff = parseOff(m[2])
		case match(&m, x86Deref, s):
			a.typ, reg = usdtArgDeref, m[2]
		case match(&m, x86Reg, s):
			a.typ, reg = usdtArgReg, m[2]
		case match(&m, x86Const, s):
			a.typ = usdtArgConst
			a.valOff = parseOff(m[2])
		default:
			return a, 0, errors.New("unrecognized location")
		}
	case "arm64":
		switch {
		case match(&m, a64DerefOff, s):
			a.typ, reg = usdtArgDeref, m[2]
			a.valOff = parseOff(m[3])
		case match(&m, a64Deref, s):
			a.typ, reg = usdtArgDeref, m[2]
		case match(&m, a64Const, s):
			a.typ = usdtArgConst
			a.valOff = parseOff(m[2])
		case match(&m, a64Reg, s):
			a.typ, reg = usdtArgReg, m[2]
		default:
			return a, 0, errors.New("unrecognized location")
		}
	default:
		return a, 0, fmt.Errorf("USDT arguments on %s are not supported", goarch)
	}
	if reg != "" {
		off, err := regOffset(goarch, reg)
		if err != nil {
			return a, 0, err
		}
		a.regOff = off
	}
	size, _ := strconv.Atoi(m[1])
	a.signed = size < 0
	if size < 0 {
		size = -size
	}
	switch size {
	case 1, 2, 4, 8:
		a.bitshift = int8(64 - size*8)
	default:
		return a, 0, fmt.Errorf("unsupported size %d", size)
	}
	return a, len(m[0]), nil
}

func match(m *[]string, re *regexp.Regexp, s string) bool {
	*m = re.FindStringSubmatch(s)
	return *m != nil
}

func parseOff(s string) uint64 {
	v, _ := strconv.ParseInt(s, 10, 64)
	return uint64(v)
}

// marshalUSDTSpec encodes struct __bpf_usdt_spec.
func marshalUSDTSpec(args []usdtArg, cookie uint64) []byte {
	b := make([]byte, usdtSpecSize)
	for i, a := range args {
		p := b[i*usdtArgSize:]
		binary.NativeEndian.PutUint64(p, a.valOff)
		binary.NativeEndian.PutUint32(p[8:], a.typ)
		binary.NativeEndian.PutUint16(p[12:], uint16(a.regOff))
		if a.signed {
			p[14] = 1
		}
		p[15] = byte(a.bitshift)
	}
	binary.NativeEndian.PutUint64(b[usdtMaxArgs*usdtArgSize:], cookie)
	binary.NativeEndian.PutUint16(b[usdtMaxArgs*usdtArgSize+8:], uint16(len(args)))
	return b
}

// attachUSDT attaches prog to every site of the USDT probe target
// (PATH:PROVIDER:NAME), filling usdt.bpf.h's maps.
func attachUSDT(name, target string, prog *ebpf.Program, ps *ebpf.ProgramSpec, opt AttachOptions) (*attachment, error) {
	path, provider, probe, err := parseUSDTTarget(target)
	if err != nil {
		return nil, configErrorf("section %s: %w", ps.SectionName, err)
	}
	st := opt.usdt
	if st == nil || st.maps[usdtSpecsMap] == nil {
		return nil, configErrorf("section %s: the object has no %s map: include <bpf/usdt.bpf.h>", ps.SectionName, usdtSpecsMap)
	}
	specs := st.maps[usdtSpecsMap]
	if specs.ValueSize() != usdtSpecSize {
		return nil, configErrorf("map %s: value of %d bytes, want struct __bpf_usdt_spec (%d bytes)", usdtSpecsMap, specs.ValueSize(), usdtSpecSize)
	}
	sites, shared, err := usdtSites(path, provider, probe, runtime.GOARCH)
	if err != nil {
		return nil, configErrorf("section %s: %w", ps.SectionName, err)
	}
	cookies := hasBPFCookie()
	if !cookies && shared && opt.UprobePID == 0 {
		return nil, configErrorf("section %s: USDT in the shared library %s needs BPF cookies (Linux 5.15), which this kernel lacks", ps.SectionName, path)
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return nil, err
	}
	a := &attachment{point: fmt.Sprintf("usdt %s:%s:%s (%d sites)", path, provider, probe, len(sites))}
	for i, s := range sites {
		spec := marshalUSDTSpec(s.spec, 0)
		id, ok := st.specs[string(spec)]
		if !ok {
			id = uint32(len(st.specs))
			if id >= min(usdtMaxSpecCnt, specs.MaxEntries()) {
				a.Close()
				return nil, configErrorf("section %s: more than %d distinct USDT argument specs", ps.SectionName, specs.MaxEntries())
			}
			if err := specs.Put(id, spec); err != nil {
				a.Close()
				return nil, fmt.Errorf("map %s: %w", usdtSpecsMap, err)
			}
			st.specs[string(spec)] = id
		}
		if !cookies {
			ipm := st.maps[usdtIPMap]
			if ipm == nil {
				a.Close()
				return nil, configErrorf("section %s: the object has no %s map", ps.SectionName, usdtIPMap)
			}
			if err := ipm.Put(int64(s.absIP), id); err != nil {
				a.Close()
				return nil, fmt.Errorf("map %s: %w", usdtIPMap, err)
			}
		}
		uo := &link.UprobeOptions{Address: s.relIP, RefCtrOffset: s.semaOff, PID: opt.UprobePID}
		if cookies {
			uo.Cookie = uint64(id)
		}
		l, err := ex.Uprobe(provider+":"+probe, prog, uo)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("site %d at %#x: %w", i, s.absIP, err)
		}
		a.links = append(a.links, l)
		pin := name
		if i > 0 {
			pin = fmt.Sprintf("%s@site%d", name, i)
		}
		a.pins = append(a.pins, pin)
	}
	return a, nil
}
