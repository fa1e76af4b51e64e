package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Results of a verification (Report.Result).
const (
	// ResultVerified: every program was accepted in every mode.
	ResultVerified = "verified"
	// ResultRejected: the kernel refused at least one program.
	ResultRejected = "rejected"
	// ResultKernelError: the VM stopped without results (a panic, no
	// /init, garbage on the console).
	ResultKernelError = "kernel-error"
	// ResultTimeout: the VM did not finish in time.
	ResultTimeout = "timeout"
	// ResultRunnerError: the runner started but could not do the job
	// (another kernel booted, unreadable object, no bpffs...).
	ResultRunnerError = "runner-error"
)

// Request is one artifact to verify on one kernel.
type Request struct {
	// Runner is the bpfarm-verifier binary.
	Runner string
	// Image is the kernel image; Arch its arch (x86_64, arm64); Release
	// the release it must boot as (not checked when empty); Kernel the
	// archive's id, for the records.
	Image   string
	Arch    string
	Release string
	Kernel  string
	// Program and Revision name the artifact.
	Program  string
	Revision string
	// The artifact's files.
	Object, Relocated, MinBTF []byte
	// Modes (DefaultModes when empty).
	Modes []string
	// VM settings: see VM.
	Qemu    string
	Accel   string
	Memory  string
	Timeout time.Duration
	Cmdline string
	// TempDir holds the initramfs while the VM runs (os.TempDir() when
	// empty).
	TempDir string
}

// Report is the outcome of a verification.
type Report struct {
	Result string
	// Reason says why the result is not verified or rejected.
	Reason string
	// Info describes the booted kernel, as the runner saw it.
	Info *GuestInfo
	// Programs holds each program's verdict in each mode.
	Programs []ProgramResult
	// Outcome is the VM's (console, timings, accelerator).
	Outcome *Outcome
}

// Verdict is a program's verdict over every mode: accepted only if every
// mode was.
type Verdict struct {
	Accepted     bool
	Instructions int
	Error        string
}

// Verdicts combines each program's results over the modes.
func (r *Report) Verdicts() map[string]Verdict {
	out := map[string]Verdict{}
	for _, p := range r.Programs {
		v, seen := out[p.Program]
		if !seen {
			v.Accepted = true
		}
		if p.Instructions > v.Instructions {
			v.Instructions = p.Instructions
		}
		if !p.Accepted {
			if v.Accepted || v.Error == "" {
				v.Error = p.Mode + ": " + p.Error
			}
			v.Accepted = false
		}
		out[p.Program] = v
	}
	return out
}

// Run verifies one artifact on one kernel: it writes the initramfs, boots
// the VM and reads its answer. The error is for failures to start at all;
// kernel and runner failures are Reports.
func Run(ctx context.Context, req Request) (*Report, error) {
	modes := req.Modes
	if len(modes) == 0 {
		modes = DefaultModes
	}
	arch := req.Arch
	if arch == "" {
		arch = "x86_64"
	}
	a, ok := Arches[arch]
	if !ok {
		return nil, fmt.Errorf("arch %q: the verifier boots %s", arch, strings.Join(archNames(), ", "))
	}
	job := &Job{Version: JobVersion, Nonce: NewNonce(), Program: req.Program, Revision: req.Revision,
		Kernel: req.Kernel, Release: req.Release, Console: "/dev/" + a.Console, Modes: modes, PowerOff: true}
	dir, err := os.MkdirTemp(req.TempDir, "verify-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initramfs.cpio")
	in := &Initramfs{Init: req.Runner, Job: job, Object: req.Object, Relocated: req.Relocated, MinBTF: req.MinBTF}
	if err := in.WriteFile(initrd); err != nil {
		return nil, err
	}
	vm := &VM{Arch: arch, Qemu: req.Qemu, Kernel: req.Image, Initrd: initrd, Cmdline: req.Cmdline,
		Memory: req.Memory, Accel: req.Accel, Timeout: req.Timeout, Nonce: job.Nonce}
	out, err := vm.Run(ctx)
	if err != nil {
		return nil, err
	}
	return Summarize(out), nil
}

// Summarize turns a VM's outcome into a report.
func Summarize(out *Outcome) *Report {
	r := &Report{Outcome: out, Reason: out.Reason}
	switch out.Status {
	case StatusTimeout:
		r.Result = ResultTimeout
		return r
	case StatusKernelError:
		r.Result = ResultKernelError
		return r
	}
	var errs []string
	for _, rec := range out.Records {
		switch rec.Kind {
		case KindInfo:
			r.Info = rec.Info
		case KindProgram:
			if rec.Program != nil {
				r.Programs = append(r.Programs, *rec.Program)
			}
		case KindError:
			errs = append(errs, rec.Error)
		}
	}
	switch {
	case len(errs) > 0:
		r.Result, r.Reason = ResultRunnerError, strings.Join(errs, "; ")
	case len(r.Programs) == 0:
		r.Result, r.Reason = ResultRunnerError, "the runner found no program to load"
	default:
		r.Result = ResultVerified
		for _, p := range r.Programs {
			if !p.Accepted {
				r.Result = ResultRejected
			}
		}
	}
	return r
}
