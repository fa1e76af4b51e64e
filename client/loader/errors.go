//go:build linux

package loader

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// errnoENOTSUPP is the kernel's internal ENOTSUPP (524), which leaks to user
// space from some BPF paths (trampolines, for one).
const errnoENOTSUPP = syscall.Errno(524)

// hostFeatures is what the hook error mapping needs to know about the
// kernel.
type hostFeatures struct {
	// Kprobes: the kernel has the kprobe PMU or tracefs kprobe_events.
	Kprobes bool
	// Uprobes: the kernel has the uprobe PMU or tracefs uprobe_events.
	Uprobes bool
	// Tracefs: tracefs is mounted at /sys/kernel/tracing.
	Tracefs bool
	// LSMs is the list of active LSMs (/sys/kernel/security/lsm), or ""
	// when unknown.
	LSMs string
}

// probeFeatures looks at the running kernel.
func probeFeatures() hostFeatures {
	exists := func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	}
	f := hostFeatures{
		Kprobes: exists("/sys/bus/event_source/devices/kprobe") || exists(tracefsDir+"/kprobe_events"),
		Uprobes: exists("/sys/bus/event_source/devices/uprobe") || exists(tracefsDir+"/uprobe_events"),
		Tracefs: exists(tracefsDir + "/events"),
	}
	if raw, err := os.ReadFile("/sys/kernel/security/lsm"); err == nil {
		f.LSMs = strings.TrimSpace(string(raw))
	}
	return f
}

// isNotSupported reports whether err says the kernel lacks a feature.
func isNotSupported(err error) bool {
	return errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, errnoENOTSUPP)
}

// isNotExist reports whether err says a hook's target does not exist.
func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// hookKind is the part of an ELF section name before the first slash,
// without libbpf's "?" (not autoloaded) marker.
func hookKind(section string) string {
	kind, _, _ := strings.Cut(strings.TrimPrefix(section, "?"), "/")
	return kind
}

// explainHookError turns err, the failure of op ("load" or "attach") for a
// program of section kind kind (e.g. "kprobe") and target (e.g.
// "do_sys_openat2"), into an error naming the hook and, when it can tell,
// the kernel feature that is missing. The result wraps err.
func explainHookError(op, kind, target string, err error, f hostFeatures) error {
	hook := kind
	if target != "" {
		hook += "/" + target
	}
	return &hookError{op: op, hook: hook, why: hookProblem(kind, target, err, f), err: err}
}

// hookProblem explains err for a hook of kind kind, or returns "".
func hookProblem(kind, target string, err error, f hostFeatures) string {
	// A verifier rejection (EACCES/EPERM with a log) is about the program,
	// not the hook: its log says why.
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return ""
	}
	base := strings.TrimSuffix(kind, ".s")
	switch base {
	case "kprobe", "kretprobe", "ksyscall", "kretsyscall":
		switch {
		case !f.Kprobes:
			return "this kernel has no kprobe support (CONFIG_KPROBES=n)"
		case isNotExist(err):
			return fmt.Sprintf("no kernel function %s to probe (not in /proc/kallsyms, or not traceable)", target)
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return "the kernel refused the kprobe (lockdown, or missing CAP_PERFMON/CAP_SYS_ADMIN)"
		case isNotSupported(err):
			return "this kernel has no kprobe support"
		}
	case "kprobe.multi", "kretprobe.multi", "kprobe.session":
		switch {
		case isNotSupported(err):
			return "this kernel has no kprobe.multi support (CONFIG_FPROBE=n, or Linux before 5.18)"
		case isNotExist(err):
			return fmt.Sprintf("no kernel function matches %s", target)
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return "the kernel refused the multi-kprobe (lockdown, or missing CAP_PERFMON/CAP_SYS_ADMIN)"
		}
	case "fentry", "fexit", "fmod_ret", "fsession", "lsm", "tp_btf", "freplace":
		if base == "lsm" && f.LSMs != "" && !strings.Contains(","+f.LSMs+",", ",bpf,") {
			return fmt.Sprintf("the BPF LSM is not active (CONFIG_BPF_LSM=y and \"bpf\" in the lsm= boot parameter; active: %s)", f.LSMs)
		}
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			if base == "tp_btf" {
				return "the kernel refused the BTF tracepoint (EPERM: lockdown, a sandbox, or missing CAP_BPF/CAP_PERFMON)"
			}
			return "the kernel refused a BPF trampoline (EPERM): fentry/fexit/fmod_ret/lsm programs are not allowed here (lockdown, a sandbox, or missing CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN)"
		case isNotSupported(err):
			if base == "tp_btf" {
				return "this kernel has no BTF tracepoint support"
			}
			return "this kernel has no BPF trampoline support (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=n, or the architecture lacks it)"
		case isNotExist(err):
			return fmt.Sprintf("the kernel's BTF has no function %s", target)
		case base == "fmod_ret" && errors.Is(err, unix.EINVAL):
			return fmt.Sprintf("%s does not allow return value modification (not ALLOW_ERROR_INJECTION)", target)
		}
	case "tracepoint", "tp":
		switch {
		case !f.Tracefs:
			return "tracefs is not mounted at " + tracefsDir
		case isNotExist(err):
			return fmt.Sprintf("this kernel has no tracepoint %s", target)
		case isNotSupported(err):
			return "this kernel has no tracepoint support (CONFIG_TRACEPOINTS=n)"
		}
	case "raw_tracepoint", "raw_tp", "raw_tracepoint.w", "raw_tp.w":
		if isNotExist(err) {
			return fmt.Sprintf("this kernel has no tracepoint %s", target)
		}
	case "uprobe", "uretprobe", "uprobe.multi", "uretprobe.multi", "usdt":
		switch {
		case !f.Uprobes || isNotSupported(err):
			return "this kernel has no uprobe support (CONFIG_UPROBE_EVENTS=n)"
		case isNotExist(err):
			return fmt.Sprintf("no such file or symbol: %s", target)
		}
	case "xdp", "xdp.frags":
		switch {
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
			return "another XDP program is attached to the interface"
		case isNotSupported(err):
			return "the driver has no XDP support in this mode (try XDPMode \"generic\")"
		}
	case "tcx", "tc", "classifier":
		if isNotSupported(err) {
			return "tc programs need tcx (Linux 6.6+) here: classic tc attach through netlink is not supported"
		}
	case "cgroup", "cgroup_skb", "sockops":
		if isNotSupported(err) {
			return "this kernel can't attach this cgroup program type"
		}
	case "perf_event":
		switch {
		case isNotExist(err), errors.Is(err, unix.ENODEV):
			return "this kernel has no cpu-clock perf event (CONFIG_PERF_EVENTS=n)"
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return "perf events are not allowed (kernel.perf_event_paranoid, or missing CAP_PERFMON)"
		}
	case "iter", "iter.s":
		if isNotExist(err) || errors.Is(err, unix.EINVAL) {
			return fmt.Sprintf("this kernel has no %s iterator, or it needs parameters (a map, a task, a cgroup)", target)
		}
	case "sk_lookup", "flow_dissector":
		if isNotSupported(err) {
			return "this kernel can't attach this program type to a network namespace"
		}
	}
	if isNotSupported(err) {
		return "not supported by this kernel"
	}
	return ""
}
