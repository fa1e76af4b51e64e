package inspect

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// gplOnlyHelpers are the BPF helpers whose kernel prototype (struct
// bpf_func_proto) sets .gpl_only = true: the verifier rejects a call to one
// of them from a program whose license is not GPL-compatible with "cannot
// call GPL-restricted function from non-GPL compatible program".
//
// Sources: the prototypes in the Linux sources (kernel/trace/bpf_trace.c,
// kernel/bpf/helpers.c, kernel/bpf/stackmap.c, net/core/filter.c,
// drivers/media/rc/bpf-lirc.c), cross-checked against Linux 6.18 by loading
// a call to every helper 1-211 with license "MIT" into each program type
// that offers it and recording which ones the verifier refused as
// GPL-restricted. bpf_probe_write_user, bpf_override_return and the
// bpf_rc_* helpers could not be loaded on that kernel and come from the
// sources alone.
//
// Helpers that are NOT GPL-only although they are often assumed to be
// include bpf_ringbuf_*, bpf_spin_lock, bpf_send_signal(_thread),
// bpf_copy_from_user (but bpf_copy_from_user_task is), bpf_get_task_stack,
// bpf_d_path, bpf_snprintf_btf, bpf_find_vma, bpf_get_attach_cookie,
// bpf_per_cpu_ptr and bpf_ktime_get_boot_ns.
var gplOnlyHelpers = map[asm.BuiltinFunc]struct{}{
	asm.FnProbeRead:                {},
	asm.FnTracePrintk:              {},
	asm.FnPerfEventRead:            {},
	asm.FnPerfEventOutput:          {},
	asm.FnGetStackid:               {}, // except for perf_event programs, see gplOnlyHelper
	asm.FnGetCurrentTask:           {},
	asm.FnProbeWriteUser:           {},
	asm.FnProbeReadStr:             {},
	asm.FnPerfEventReadValue:       {},
	asm.FnPerfProgReadValue:        {},
	asm.FnOverrideReturn:           {},
	asm.FnGetStack:                 {},
	asm.FnFibLookup:                {},
	asm.FnRcRepeat:                 {},
	asm.FnRcKeydown:                {},
	asm.FnRcPointerRel:             {},
	asm.FnTcpCheckSyncookie:        {},
	asm.FnTcpGenSyncookie:          {},
	asm.FnSkbOutput:                {},
	asm.FnProbeReadUser:            {},
	asm.FnProbeReadKernel:          {},
	asm.FnProbeReadUserStr:         {},
	asm.FnProbeReadKernelStr:       {},
	asm.FnReadBranchRecords:        {},
	asm.FnXdpOutput:                {},
	asm.FnSeqPrintf:                {},
	asm.FnSeqWrite:                 {},
	asm.FnSeqPrintfBtf:             {},
	asm.FnGetCurrentTaskBtf:        {},
	asm.FnCheckMtu:                 {},
	asm.FnSnprintf:                 {},
	asm.FnTimerInit:                {},
	asm.FnTimerSetCallback:         {},
	asm.FnTimerStart:               {},
	asm.FnTimerCancel:              {},
	asm.FnGetFuncIp:                {},
	asm.FnTaskPtRegs:               {},
	asm.FnGetBranchSnapshot:        {},
	asm.FnTraceVprintk:             {},
	asm.FnCopyFromUserTask:         {},
	asm.FnTcpRawGenSyncookieIpv4:   {},
	asm.FnTcpRawGenSyncookieIpv6:   {},
	asm.FnTcpRawCheckSyncookieIpv4: {},
	asm.FnTcpRawCheckSyncookieIpv6: {},
}

// gplOnlyByName indexes gplOnlyHelpers by helper name (see helperName).
var gplOnlyByName = func() map[string]struct{} {
	m := make(map[string]struct{}, len(gplOnlyHelpers))
	for fn := range gplOnlyHelpers {
		m[helperName(fn)] = struct{}{}
	}
	return m
}()

// gplOnlyHelper reports whether the helper called name is GPL-only for a
// program of type progType (the ebpf.ProgramType's name).
func gplOnlyHelper(name, progType string) bool {
	// perf_event programs get bpf_get_stackid_proto_pe, which is not
	// GPL-only, instead of bpf_get_stackid_proto.
	if name == helperName(asm.FnGetStackid) && progType == ebpf.PerfEvent.String() {
		return false
	}
	_, ok := gplOnlyByName[name]
	return ok
}
