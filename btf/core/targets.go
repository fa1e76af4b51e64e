package core

import (
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Target kinds.
const (
	TargetTracepoint    = "tracepoint"
	TargetRawTracepoint = "raw_tracepoint"
	TargetBTFTracepoint = "btf_tracepoint"
	TargetFunction      = "function"
	TargetKfunc         = "kfunc"
)

// Target statuses.
const (
	TargetPresent = "present"
	TargetMissing = "missing"
	TargetUnknown = "unknown"
)

// targetReq is a tracing target a program needs and how to find it in a
// kernel's BTF: it is present if any of lookups matches, otherwise absent.
type targetReq struct {
	kind    string
	name    string
	lookups []typeLookup
	absent  string // TargetMissing or TargetUnknown
}

// typeLookup matches a BTF type by exact name and kind.
type typeLookup struct {
	name string
	kind string // "func", "typedef", "struct"
}

func (l typeLookup) match(t btf.Type) bool {
	switch l.kind {
	case "func":
		_, ok := t.(*btf.Func)
		return ok
	case "typedef":
		_, ok := t.(*btf.Typedef)
		return ok
	case "struct":
		_, ok := t.(*btf.Struct)
		return ok
	}
	return false
}

// syscallPrefixes are the prefixes of the kernel's syscall entry points, one
// of which exists for every syscall on the architectures CO-RE targets.
var syscallPrefixes = []string{"__x64_sys_", "__arm64_sys_", "__s390x_sys_", "__riscv_sys_", "__se_sys_", "__do_sys_"}

func syscallLookups(name string) []typeLookup {
	var out []typeLookup
	for _, p := range syscallPrefixes {
		out = append(out, typeLookup{p + name, "func"})
	}
	return out
}

// programTargets derives the kernel hooks a program needs from its section
// name (libbpf's conventions) and its kfunc calls.
//
//   - tp/CAT/NAME, tracepoint/CAT/NAME: tracepoint NAME, present if the BTF
//     has typedef btf_trace_NAME or struct trace_event_raw_NAME. Syscall
//     tracepoints (syscalls/sys_enter_X, sys_exit_X) have neither: they are
//     present if a syscall entry point (__x64_sys_X, __arm64_sys_X,
//     __se_sys_X, __do_sys_X, ...) exists, unknown otherwise.
//   - raw_tp/NAME, raw_tracepoint/NAME (and .w), tp_btf/NAME: typedef
//     btf_trace_NAME.
//   - fentry, fexit, fmod_ret (and .s), fsession: func NAME ("MODULE:NAME"
//     accepted); lsm, lsm.s, lsm_cgroup: func bpf_lsm_NAME; iter: func
//     bpf_iter_NAME.
//   - kprobe, kretprobe: func NAME (without a +offset); unknown rather than
//     missing when absent, since kprobes may target functions without BTF.
//     ksyscall, kretsyscall: a syscall entry point, else unknown.
//     Wildcard patterns (kprobe.multi) are unknown.
//   - every kfunc the program calls: func NAME.
//
// Other program types (uprobe, usdt, xdp, tc, cgroup, ...) need no kernel
// BTF target.
func programTargets(ps *ebpf.ProgramSpec, kfuncs []string) []targetReq {
	var out []targetReq
	sec := strings.TrimPrefix(ps.SectionName, "?")
	prefix, rest, _ := strings.Cut(sec, "/")
	switch prefix {
	case "tp", "tracepoint":
		cat, name, ok := strings.Cut(rest, "/")
		if !ok {
			name, cat = rest, ""
		}
		if name == "" {
			break
		}
		if cat == "syscalls" && (strings.HasPrefix(name, "sys_enter_") || strings.HasPrefix(name, "sys_exit_")) {
			sys := strings.TrimPrefix(strings.TrimPrefix(name, "sys_enter_"), "sys_exit_")
			out = append(out, targetReq{TargetTracepoint, name, syscallLookups(sys), TargetUnknown})
			break
		}
		out = append(out, targetReq{TargetTracepoint, name, []typeLookup{
			{"btf_trace_" + name, "typedef"}, {"trace_event_raw_" + name, "struct"},
		}, TargetMissing})

	case "raw_tp", "raw_tracepoint", "raw_tp.w", "raw_tracepoint.w":
		if rest != "" {
			out = append(out, targetReq{TargetRawTracepoint, rest, []typeLookup{{"btf_trace_" + rest, "typedef"}}, TargetMissing})
		}

	case "tp_btf":
		if rest != "" {
			out = append(out, targetReq{TargetBTFTracepoint, rest, []typeLookup{{"btf_trace_" + rest, "typedef"}}, TargetMissing})
		}

	case "fentry", "fexit", "fmod_ret", "fentry.s", "fexit.s", "fmod_ret.s", "fsession", "fsession.s":
		if _, fn, ok := strings.Cut(rest, ":"); ok {
			rest = fn
		}
		if rest != "" {
			out = append(out, targetReq{TargetFunction, rest, []typeLookup{{rest, "func"}}, TargetMissing})
		}

	case "lsm", "lsm.s", "lsm_cgroup":
		if rest != "" {
			out = append(out, targetReq{TargetFunction, "bpf_lsm_" + rest, []typeLookup{{"bpf_lsm_" + rest, "func"}}, TargetMissing})
		}

	case "iter", "iter.s":
		if rest != "" {
			out = append(out, targetReq{TargetFunction, "bpf_iter_" + rest, []typeLookup{{"bpf_iter_" + rest, "func"}}, TargetMissing})
		}

	case "kprobe", "kretprobe", "kprobe.multi", "kretprobe.multi", "kprobe.session":
		name, _, _ := strings.Cut(rest, "+")
		if name == "" {
			break
		}
		if strings.ContainsAny(name, "*?[") {
			out = append(out, targetReq{TargetFunction, name, nil, TargetUnknown})
			break
		}
		out = append(out, targetReq{TargetFunction, name, []typeLookup{{name, "func"}}, TargetUnknown})

	case "ksyscall", "kretsyscall":
		if rest != "" {
			out = append(out, targetReq{TargetFunction, rest, syscallLookups(rest), TargetUnknown})
		}
	}
	for _, fn := range kfuncs {
		out = append(out, targetReq{TargetKfunc, fn, []typeLookup{{fn, "func"}}, TargetMissing})
	}
	return out
}

// resolveTargets checks a program's targets against a kernel. Call it
// inside Kernel.lookup. When the kernel tags its kfuncs (kfuncTags), a
// kfunc is present only as a FUNC with the "bpf_kfunc" decl tag: a kernel
// function that isn't registered as a kfunc can't be called.
func resolveTargets(k *Kernel, reqs []targetReq, kfuncTags, mods bool) ([]Target, error) {
	var out []Target
	for _, req := range reqs {
		status := req.absent
		for _, l := range req.lookups {
			match := l.match
			if req.kind == TargetKfunc && kfuncTags {
				match = func(t btf.Type) bool {
					fn, ok := t.(*btf.Func)
					return ok && slices.Contains(fn.Tags, kfuncDeclTag)
				}
			}
			ok, err := k.hasType(l.name, match, mods)
			if err != nil {
				return nil, err
			}
			if ok {
				status = TargetPresent
				break
			}
		}
		out = append(out, Target{Kind: req.kind, Name: req.name, Status: status})
	}
	return out, nil
}
