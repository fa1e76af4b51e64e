package inspect

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
)

// TestHelperNamesMatchLibbpf checks helperName against the helper
// declarations libbpf generates from the kernel's UAPI header.
func TestHelperNamesMatchLibbpf(t *testing.T) {
	defs, err := os.ReadFile("/usr/include/bpf/bpf_helper_defs.h")
	if err != nil {
		if os.Getenv("BPFARM_TEST_STRICT") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	re := regexp.MustCompile(`\(\*(bpf_\w+)\)\(.*\) = \(void \*\) (\d+);`)
	matches := re.FindAllSubmatch(defs, -1)
	if len(matches) < 100 {
		t.Fatalf("found only %d helper declarations in bpf_helper_defs.h", len(matches))
	}
	for _, m := range matches {
		id, _ := strconv.Atoi(string(m[2]))
		if got, want := helperName(asm.BuiltinFunc(id)), string(m[1]); got != want {
			t.Errorf("helperName(%d) = %q, want %q", id, got, want)
		}
	}
}

// TestGPLOnlyHelpersAgainstKernel loads a call to each helper with a non-GPL
// license into the running kernel and checks that the verifier refuses
// exactly the helpers in gplOnlyHelpers as GPL-restricted.
func TestGPLOnlyHelpersAgainstKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("loads ~1700 programs; skipped in -short mode")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Skip("can't load BPF programs:", err)
	}
	probe := &ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "MIT", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, 0), asm.Return(),
	}}
	if p, err := ebpf.NewProgram(probe); err != nil {
		t.Skip("can't load BPF programs:", err)
	} else {
		p.Close()
	}

	// Program types offering most helpers. Helpers that none of them
	// offer (bpf_probe_write_user without lockdown, bpf_override_return,
	// the bpf_rc_* and LSM-only helpers) are not checked.
	types := []ebpf.ProgramSpec{
		{Type: ebpf.TracePoint},
		{Type: ebpf.RawTracepoint},
		{Type: ebpf.PerfEvent},
		{Type: ebpf.XDP},
		{Type: ebpf.SchedCLS},
		{Type: ebpf.CGroupSKB},
		{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_switch"},
		{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "task"},
	}

	// verdict: 0 unavailable, 1 accepted, 2 GPL-restricted.
	verdict := func(spec ebpf.ProgramSpec, fn asm.BuiltinFunc) int {
		spec.License = "MIT"
		spec.Instructions = asm.Instructions{
			asm.Mov.Imm(asm.R1, 0), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0),
			asm.Mov.Imm(asm.R4, 0), asm.Mov.Imm(asm.R5, 0),
			fn.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return(),
		}
		p, err := ebpf.NewProgramWithOptions(&spec, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
		if err == nil {
			p.Close()
			return 1
		}
		var ve *ebpf.VerifierError
		if !errors.As(err, &ve) {
			return 0
		}
		log := strings.Join(ve.Log, "\n")
		switch {
		case strings.Contains(log, "GPL-restricted"):
			return 2
		case strings.Contains(log, "unknown func"), strings.Contains(log, "cannot use helper"), strings.Contains(log, "invalid func"):
			return 0
		}
		return 1
	}

	for id := uint32(1); id <= uint32(asm.FnCgrpStorageDelete); id++ {
		fn := asm.BuiltinFunc(id)
		_, listed := gplOnlyHelpers[fn]
		for _, spec := range types {
			v := verdict(spec, fn)
			if v == 0 {
				continue
			}
			want := listed && gplOnlyHelper(helperName(fn), spec.Type.String())
			if got := v == 2; got != want {
				t.Errorf("%s in %s program: kernel GPL-only = %v, gplOnlyHelpers = %v", helperName(fn), spec.Type, got, want)
			}
		}
	}
}
