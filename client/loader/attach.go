//go:build linux

package loader

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachment is a program attached to its hook.
type attachment struct {
	// links are the program's links; pins[i] names links[i]'s pin in the
	// set's links directory.
	links []link.Link
	pins  []string
	// unpinnable are attachments that can't be pinned (legacy perf event
	// attachments): they last as long as they are open.
	unpinnable []io.Closer
	// point describes the hook.
	point string
	// note explains a program that is deliberately not attached.
	note string
}

// Close detaches everything that is not pinned.
func (a *attachment) Close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	for _, c := range a.unpinnable {
		errs = append(errs, c.Close())
	}
	a.links, a.unpinnable = nil, nil
	return errors.Join(errs...)
}

// attached reports whether the program is attached.
func (a *attachment) attached() bool {
	return a != nil && (len(a.links) > 0 || len(a.unpinnable) > 0)
}

// needsTracefs reports whether attaching a program of this section needs
// tracefs (cilium/ebpf finds tracepoint IDs and, without the kprobe and
// uprobe PMUs, creates probes there).
func needsTracefs(section string) bool {
	switch strings.TrimSuffix(hookKind(section), ".s") {
	case "tracepoint", "tp", "kprobe", "kretprobe", "ksyscall", "kretsyscall",
		"uprobe", "uretprobe", "usdt", "kprobe.multi", "kretprobe.multi":
		return true
	}
	return false
}

// attachProgram attaches prog, loaded from ps, to the hook its section
// names. Errors name the hook and, when known, the missing kernel feature.
func attachProgram(name string, prog *ebpf.Program, ps *ebpf.ProgramSpec, opt AttachOptions) (*attachment, error) {
	kind := hookKind(ps.SectionName)
	target := ps.AttachTo
	a, err := attachHook(name, kind, target, prog, ps, opt)
	if err != nil {
		var ce configError
		if errors.As(err, &ce) {
			return nil, err
		}
		return nil, explainHookError("attach", kind, target, err, probeFeatures())
	}
	return a, nil
}

// configError is an attach error caused by the options or the section,
// not by the kernel: it is returned as it is.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

func configErrorf(format string, args ...any) error {
	return configError{fmt.Errorf(format, args...)}
}

// attachHook attaches prog by section kind (tp, xdp, ...) and target (the
// section's part after the first slash).
func attachHook(name, kind, target string, prog *ebpf.Program, ps *ebpf.ProgramSpec, opt AttachOptions) (*attachment, error) {
	one := func(l link.Link, err error, point string) (*attachment, error) {
		if err != nil {
			return nil, err
		}
		return &attachment{links: []link.Link{l}, pins: []string{name}, point: point}, nil
	}
	base := strings.TrimSuffix(kind, ".s")

	switch base {
	case "tracepoint", "tp":
		group, event, ok := strings.Cut(target, "/")
		if !ok || group == "" || event == "" {
			return nil, configErrorf("section %s: want %s/CATEGORY/NAME", ps.SectionName, kind)
		}
		l, err := link.Tracepoint(group, event, prog, nil)
		return one(l, err, "tracepoint "+target)

	case "raw_tracepoint", "raw_tp", "raw_tracepoint.w", "raw_tp.w":
		if target == "" {
			return &attachment{note: "the section names no tracepoint: not attached"}, nil
		}
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: target, Program: prog})
		return one(l, err, "raw_tracepoint "+target)

	case "tp_btf", "fentry", "fexit", "fmod_ret", "fsession":
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ps.AttachType})
		return one(l, err, base+" "+target)

	case "lsm":
		l, err := link.AttachLSM(link.LSMOptions{Program: prog})
		return one(l, err, "lsm "+target)

	case "kprobe", "kretprobe":
		if target == "" {
			return &attachment{note: "the section names no function: not attached"}, nil
		}
		symbol, offset, err := parseSymbolOffset(target)
		if err != nil {
			return nil, configErrorf("section %s: %w", ps.SectionName, err)
		}
		opts := &link.KprobeOptions{Offset: offset}
		var l link.Link
		if base == "kprobe" {
			l, err = link.Kprobe(symbol, prog, opts)
		} else {
			l, err = link.Kretprobe(symbol, prog, opts)
		}
		return one(l, err, base+" "+target)

	case "ksyscall", "kretsyscall":
		if target == "" {
			return &attachment{note: "the section names no system call: not attached"}, nil
		}
		var (
			l   link.Link
			err error
		)
		syms := syscallSymbols(target)
		if !probeFeatures().Kprobes {
			syms = syms[:1] // fails, and says why
		}
		for _, sym := range syms {
			if base == "ksyscall" {
				l, err = link.Kprobe(sym, prog, nil)
			} else {
				l, err = link.Kretprobe(sym, prog, nil)
			}
			if err == nil {
				return one(l, nil, fmt.Sprintf("%s %s (%s)", base, target, sym))
			}
			if !isNotExist(err) {
				break
			}
		}
		return nil, err

	case "kprobe.multi", "kretprobe.multi":
		if target == "" {
			return &attachment{note: "the section names no functions: not attached"}, nil
		}
		symbols, err := expandKprobePattern(target)
		if err != nil {
			return nil, err
		}
		opts := link.KprobeMultiOptions{Symbols: symbols}
		var l link.Link
		if base == "kprobe.multi" {
			l, err = link.KprobeMulti(prog, opts)
		} else {
			l, err = link.KretprobeMulti(prog, opts)
		}
		return one(l, err, fmt.Sprintf("%s %s (%d functions)", base, target, len(symbols)))

	case "usdt":
		if target == "" {
			return &attachment{note: "the section names no binary and probe: not attached"}, nil
		}
		return attachUSDT(name, target, prog, ps, opt)

	case "uprobe", "uretprobe":
		if target == "" {
			return &attachment{note: "the section names no binary and symbol: not attached"}, nil
		}
		u, err := parseUprobeTarget(target)
		if err != nil {
			return nil, configErrorf("section %s: %w", ps.SectionName, err)
		}
		ex, err := link.OpenExecutable(u.path)
		if err != nil {
			return nil, err
		}
		opts := &link.UprobeOptions{Address: u.address, Offset: u.offset, PID: opt.UprobePID}
		var l link.Link
		if base == "uprobe" {
			l, err = ex.Uprobe(u.symbol, prog, opts)
		} else {
			l, err = ex.Uretprobe(u.symbol, prog, opts)
		}
		point := base + " " + target
		if opt.UprobePID != 0 {
			point += fmt.Sprintf(" (pid %d)", opt.UprobePID)
		}
		return one(l, err, point)

	case "xdp", "xdp.frags":
		if target == "devmap" || target == "cpumap" {
			return &attachment{note: fmt.Sprintf("xdp/%s programs are attached by the application, through a %s entry", target, target)}, nil
		}
		point, err := updatablePoint(kind, ps, opt)
		if err != nil {
			return nil, err
		}
		ifc, _ := lookupInterface(opt.Interface, kind)
		var flags link.XDPAttachFlags
		switch opt.XDPMode {
		case "generic":
			flags = link.XDPGenericMode
		case "native", "driver":
			flags = link.XDPDriverMode
		case "offload":
			flags = link.XDPOffloadMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: flags})
		return one(l, err, point)

	case "tcx", "tc", "classifier":
		point, err := updatablePoint(kind, ps, opt)
		if err != nil {
			return nil, err
		}
		ifc, _ := lookupInterface(opt.Interface, kind)
		l, err := link.AttachTCX(link.TCXOptions{Program: prog, Interface: ifc.Index, Attach: tcxAttachType(ps, opt)})
		return one(l, err, point)

	case "cgroup", "cgroup_skb", "sockops", "lsm_cgroup":
		point, err := updatablePoint(kind, ps, opt)
		if err != nil {
			return nil, err
		}
		cg, _ := cgroupPath(opt.CgroupPath)
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ps.AttachType, Program: prog})
		return one(l, err, point)

	case "perf_event":
		freq := opt.PerfFreq
		if freq == 0 {
			freq = DefaultPerfFreq
		}
		pa, err := attachPerfEvent(prog, freq)
		if err != nil {
			return nil, err
		}
		a := &attachment{
			point:      fmt.Sprintf("perf_event cpu-clock %d Hz on %d CPUs", freq, len(pa.cpus)),
			unpinnable: pa.legacy,
		}
		for i, l := range pa.links {
			a.links = append(a.links, l)
			a.pins = append(a.pins, fmt.Sprintf("%s@cpu%d", name, pa.cpus[i]))
		}
		return a, nil

	case "iter":
		if target == "" {
			return nil, configErrorf("section %s: want iter/NAME", ps.SectionName)
		}
		l, err := link.AttachIter(link.IterOptions{Program: prog})
		return one(l, err, "iter "+target)

	case "sk_lookup", "flow_dissector":
		point, err := updatablePoint(kind, ps, opt)
		if err != nil {
			return nil, err
		}
		ns, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return nil, fmt.Errorf("open network namespace: %w", err)
		}
		defer ns.Close()
		l, err := link.AttachNetNs(int(ns.Fd()), prog)
		return one(l, err, point)

	case "socket":
		return &attachment{note: "socket filters are attached by the application, to its sockets (SO_ATTACH_BPF): pinned, not attached"}, nil

	case "sk_skb", "sk_msg":
		return &attachment{note: fmt.Sprintf("%s programs are attached by the application, to a sockmap: pinned, not attached", base)}, nil

	case "syscall":
		return &attachment{note: "syscall programs are run by the application (BPF_PROG_TEST_RUN): pinned, not attached"}, nil
	}
	return nil, configErrorf("section %s (program type %s): bpfarm can't attach it automatically: load it with NoAttach and attach it from its pin", ps.SectionName, ps.Type)
}

// updatablePoint describes the hook of a program whose links the kernel
// can update in place (xdp, tcx, cgroup and netns links), before it is
// attached: Swap compares it with the old program's to decide whether to
// update the old link.
func updatablePoint(kind string, ps *ebpf.ProgramSpec, opt AttachOptions) (string, error) {
	switch base := strings.TrimSuffix(kind, ".s"); base {
	case "xdp", "xdp.frags":
		ifc, err := lookupInterface(opt.Interface, base)
		if err != nil {
			return "", err
		}
		switch opt.XDPMode {
		case "":
			return "xdp " + ifc.Name, nil
		case "generic", "native", "driver", "offload":
			return fmt.Sprintf("xdp %s (%s)", ifc.Name, opt.XDPMode), nil
		}
		return "", configErrorf("XDP mode %q: want generic, native or offload", opt.XDPMode)
	case "tcx", "tc", "classifier":
		ifc, err := lookupInterface(opt.Interface, base)
		if err != nil {
			return "", err
		}
		if ps.AttachType != ebpf.AttachTCXIngress && ps.AttachType != ebpf.AttachTCXEgress &&
			opt.TCDirection != "" && opt.TCDirection != "ingress" && opt.TCDirection != "egress" {
			return "", configErrorf("tc direction %q: want ingress or egress", opt.TCDirection)
		}
		dir := "ingress"
		if tcxAttachType(ps, opt) == ebpf.AttachTCXEgress {
			dir = "egress"
		}
		return fmt.Sprintf("tcx %s %s", ifc.Name, dir), nil
	case "cgroup", "cgroup_skb", "sockops", "lsm_cgroup":
		cg, err := cgroupPath(opt.CgroupPath)
		if err != nil {
			return "", err
		}
		what := ps.SectionName
		if base == "cgroup_skb" || ps.SectionName == "cgroup/skb" {
			what = "cgroup_skb/ingress"
			if ps.AttachType == ebpf.AttachCGroupInetEgress {
				what = "cgroup_skb/egress"
			}
		}
		return what + " " + cg, nil
	case "sk_lookup", "flow_dissector":
		ns, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			return "", fmt.Errorf("network namespace: %w", err)
		}
		return fmt.Sprintf("%s netns %s", base, ns), nil
	}
	return "", nil
}

// tcxAttachType is the tcx direction of a tc program: its section's, or
// opt.TCDirection for plain tc and classifier sections.
func tcxAttachType(ps *ebpf.ProgramSpec, opt AttachOptions) ebpf.AttachType {
	if ps.AttachType == ebpf.AttachTCXIngress || ps.AttachType == ebpf.AttachTCXEgress {
		return ps.AttachType
	}
	if opt.TCDirection == "egress" {
		return ebpf.AttachTCXEgress
	}
	return ebpf.AttachTCXIngress
}

// lookupInterface finds the interface a network program attaches to.
func lookupInterface(name, kind string) (*net.Interface, error) {
	if name == "" {
		return nil, configErrorf("%s programs need an interface (Attach.Interface)", kind)
	}
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, configErrorf("interface %s: %w", name, err)
	}
	return ifc, nil
}

// cgroupPath returns p, or the cgroup2 hierarchy when p is empty:
// /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hierarchies.
func cgroupPath(p string) (string, error) {
	if p != "" {
		return p, nil
	}
	for _, dir := range []string{DefaultCgroupPath, DefaultCgroupPath + "/unified"} {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir, nil
		}
	}
	return "", configErrorf("no cgroup2 hierarchy at %s or %s/unified: set Attach.CgroupPath", DefaultCgroupPath, DefaultCgroupPath)
}

// parseSymbolOffset parses "symbol" or "symbol+offset" (decimal or 0x hex).
func parseSymbolOffset(s string) (string, uint64, error) {
	sym, off, ok := strings.Cut(s, "+")
	if sym == "" {
		return "", 0, fmt.Errorf("no symbol in %q", s)
	}
	if !ok {
		return sym, 0, nil
	}
	v, err := strconv.ParseUint(off, 0, 64)
	if err != nil {
		return "", 0, fmt.Errorf("bad offset in %q", s)
	}
	return sym, v, nil
}

// uprobeTarget is a parsed uprobe section target.
type uprobeTarget struct {
	path    string
	symbol  string
	offset  uint64
	address uint64
}

// parseUprobeTarget parses libbpf's uprobe section targets: PATH:SYMBOL,
// PATH:SYMBOL+OFFSET and PATH:0xADDRESS (a file offset).
func parseUprobeTarget(s string) (uprobeTarget, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return uprobeTarget{}, fmt.Errorf("uprobe target %q: want PATH:SYMBOL[+OFFSET]", s)
	}
	u := uprobeTarget{path: s[:i]}
	rest := s[i+1:]
	if strings.HasPrefix(rest, "0x") && !strings.Contains(rest, "+") {
		v, err := strconv.ParseUint(rest, 0, 64)
		if err != nil {
			return uprobeTarget{}, fmt.Errorf("uprobe target %q: bad address", s)
		}
		u.address = v
		return u, nil
	}
	sym, off, err := parseSymbolOffset(rest)
	if err != nil {
		return uprobeTarget{}, fmt.Errorf("uprobe target %q: %w", s, err)
	}
	u.symbol, u.offset = sym, off
	return u, nil
}

// syscallPrefixes are the kernels' syscall wrapper prefixes, by GOARCH.
var syscallPrefixes = map[string]string{
	"386":     "__ia32_",
	"amd64":   "__x64_",
	"arm":     "__arm_",
	"arm64":   "__arm64_",
	"riscv64": "__riscv_",
	"s390x":   "__s390x_",
	"ppc64":   "__powerpc_",
	"ppc64le": "__powerpc_",
	"loong64": "",
}

// syscallSymbols returns the kernel functions a ksyscall/NAME probe tries,
// in order: the arch's syscall wrapper (__x64_sys_NAME), then sys_NAME for
// kernels without wrappers.
func syscallSymbols(name string) []string {
	syms := []string{}
	if p := syscallPrefixes[runtime.GOARCH]; p != "" {
		syms = append(syms, p+"sys_"+name)
	}
	return append(syms, "sys_"+name)
}

// expandKprobePattern expands a kprobe.multi glob against tracefs'
// available_filter_functions, or /proc/kallsyms's text symbols when that
// can't be read (as libbpf does); a pattern without wildcards is returned
// as it is.
func expandKprobePattern(pattern string) ([]string, error) {
	if !strings.ContainsAny(pattern, "*?[") {
		return []string{pattern}, nil
	}
	if f, err := os.Open(tracefsDir + "/available_filter_functions"); err == nil {
		defer f.Close()
		return matchFunctions(f, pattern, false)
	}
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("expand %s: %w", pattern, err)
	}
	defer f.Close()
	return matchFunctions(f, pattern, true)
}

// matchFunctions returns the functions of an available_filter_functions
// listing (or, if kallsyms, of /proc/kallsyms: "ADDR TYPE NAME [MODULE]",
// text symbols only) that match pattern, without duplicates.
func matchFunctions(r io.Reader, pattern string, kallsyms bool) ([]string, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("pattern %s: %w", pattern, err)
	}
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if kallsyms {
			if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") {
				continue
			}
			fields = fields[2:]
		}
		if len(fields) == 0 {
			continue
		}
		fn := fields[0]
		if ok, _ := path.Match(pattern, fn); ok && !seen[fn] {
			seen[fn] = true
			out = append(out, fn)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("expand %s: %w", pattern, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("expand %s: %w", pattern, os.ErrNotExist)
	}
	slices.Sort(out)
	return out, nil
}
