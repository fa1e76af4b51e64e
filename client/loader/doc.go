// Package loader loads bpfarm artifacts into the running kernel with
// cilium/ebpf: it is what bpfarm-agent, a static binary without clang,
// kernel headers or (possibly) kernel BTF, runs on every host.
//
// Load parses an Artifact's object, applies Options (programs to load,
// const volatile globals, max_entries), resolves CO-RE relocations as the
// Mode says (the host's BTF, the artifact's minimized BTF, or not at all for
// the pre-relocated object), loads the maps and then the programs one at a
// time, so that a verifier rejection names its program and shows the tail of
// the verifier log without hiding the other programs' fate, attaches every
// program to the hook its ELF section names, and pins maps, programs and
// links under PinDir/NAME/{maps,progs,links}/ so that everything stays loaded
// and attached after the process exits. A JSON state file per set, in
// StateDir, records what was loaded.
//
// Status reports the loaded sets with live information from the kernel,
// Adopt re-opens a set after a restart without detaching anything, Swap
// replaces a set's revision with the new one attached before the old one is
// detached (updating links in place where the hook allows), and Unload
// detaches and removes everything.
//
// Hooks by ELF section:
//
//	tracepoint/CAT/NAME, tp/CAT/NAME    link.Tracepoint
//	raw_tracepoint/NAME, raw_tp/NAME    link.AttachRawTracepoint
//	tp_btf/NAME                         link.AttachTracing
//	fentry/, fexit/, fmod_ret/ FUNC     link.AttachTracing
//	lsm/HOOK                            link.AttachLSM
//	kprobe/, kretprobe/ FUNC[+OFF]      link.Kprobe, link.Kretprobe
//	ksyscall/, kretsyscall/ NAME        kprobes on the arch's syscall entry
//	kprobe.multi/, kretprobe.multi/ PAT link.KprobeMulti (globs expanded)
//	uprobe/, uretprobe/ PATH:SYM[+OFF]  link.OpenExecutable (Attach.UprobePID)
//	xdp                                 link.AttachXDP (Attach.Interface)
//	tcx/ingress, tcx/egress, tc         link.AttachTCX (Attach.Interface)
//	cgroup/*, cgroup_skb/*, sockops     link.AttachCgroup (Attach.CgroupPath)
//	perf_event                          a cpu-clock perf event per CPU at
//	                                    Attach.PerfFreq, linked with
//	                                    BPF_LINK_CREATE
//	iter/NAME                           link.AttachIter; cat the link's pin
//	sk_lookup, flow_dissector           link.AttachNetNs (current netns)
//	socket                              not attached: the application
//	                                    attaches socket filters
//
// A hook the kernel lacks is an error naming the hook and the missing
// feature, e.g. "attach kprobe/do_sys_openat2: this kernel has no kprobe
// support (CONFIG_KPROBES=n)".
//
// The loader mounts bpffs at /sys/fs/bpf and tracefs at /sys/kernel/tracing
// when they are missing. It needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN
// and CAP_SYS_ADMIN) and no cgo.
package loader
