//go:build linux

// Command bpfarm-verifier is the /init of bpfarm's verifier VMs: a static
// (CGO_ENABLED=0) binary that loads every program of one artifact into the
// kernel it booted with, load-only, with the agent's loader, reports each
// verdict over the serial console in checksummed frames, and powers the VM
// off. See package verify for the initramfs layout and the protocol.
//
// As PID 1 it first mounts proc, sysfs and devtmpfs and re-executes itself
// (cilium/ebpf reads /proc while the program initialises, before main
// runs). "bpfarm-verifier run --root DIR" runs a job outside a VM, on the
// running kernel, with DIR standing for the initramfs root and the frames
// written to standard output (for tests).
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/verify"
)

// stageEnv marks the second stage, after the re-exec; uptimeEnv carries
// the uptime measured by the first.
const (
	stageEnv  = "BPFARM_VERIFIER_STAGE"
	uptimeEnv = "BPFARM_VERIFIER_UPTIME_MS"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		os.Exit(runOutside(os.Args[2:]))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "bpfarm-verifier: this is the /init of a verifier VM (use \"bpfarm-verifier run --root DIR\" outside one)")
		os.Exit(2)
	}
	if os.Getenv(stageEnv) != "2" {
		stage1()
		return
	}
	stage2()
}

// stage1 mounts what cilium/ebpf needs at initialisation and re-executes
// the binary. On failure it reports and powers off.
func stage1() {
	var errs []error
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s: %w", m.dir, err))
		}
	}
	uptime := readUptimeMS()
	if err := errors.Join(errs...); err != nil {
		fail(nil, err)
		return
	}
	env := append(os.Environ(), stageEnv+"=2", uptimeEnv+"="+strconv.FormatInt(uptime, 10))
	err := unix.Exec("/proc/self/exe", []string{"/init"}, env)
	fail(nil, fmt.Errorf("re-exec: %w", err))
}

// readUptimeMS reads the kernel's uptime from /proc/uptime.
func readUptimeMS() int64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return int64(v * 1000)
}

// stage2 runs the job in the VM and powers off.
func stage2() {
	for _, m := range []struct{ src, dir, fstype string }{
		{"bpffs", "/sys/fs/bpf", "bpf"},
		{"tracefs", "/sys/kernel/tracing", "tracefs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		unix.Mount(m.src, m.dir, m.fstype, 0, "") // the loader says what is missing
	}
	raw, err := os.ReadFile(verify.JobPath)
	if err != nil {
		fail(nil, fmt.Errorf("read job: %w", err))
		return
	}
	job, err := verify.ParseJob(raw)
	if err != nil {
		fail(nil, err)
		return
	}
	uptime, _ := strconv.ParseInt(os.Getenv(uptimeEnv), 10, 64)
	defer func() {
		// PID 1 must not die: a panic is reported as the runner's error.
		if r := recover(); r != nil {
			fmt.Fprintf(openConsole(job.Console), "bpfarm-verifier: panic: %v\n%s", r, debug.Stack())
			fail(job, fmt.Errorf("panic: %v", r))
		}
	}()
	records := run(context.Background(), job, "/", uptime)
	out := openConsole(job.Console)
	quiet := quietConsole()
	verify.WriteFrames(out, job.Nonce, records, 2)
	quiet()
	powerOff(job)
}

// run does the job with the artifact's files under root and returns the
// records to send.
func run(ctx context.Context, job *verify.Job, root string, uptimeMS int64) []verify.Record {
	info := guestInfo(uptimeMS)
	records := []verify.Record{{Kind: verify.KindInfo, Info: info}}
	if job.Release != "" && info.Release != job.Release {
		return append(records, verify.Record{Kind: verify.KindError,
			Error: fmt.Sprintf("booted kernel %s, the job is for %s", info.Release, job.Release)})
	}
	read := func(p string) []byte {
		b, _ := os.ReadFile(filepath.Join(root, p))
		return b
	}
	art := &loader.Artifact{Name: "verify", Revision: job.Revision, Object: read(verify.ObjectPath),
		Relocated: read(verify.RelocatedPath), MinBTF: read(verify.MinBTFPath)}
	pinRoot, err := os.MkdirTemp("/sys/fs/bpf", "bpfarm-verify-")
	if err != nil {
		return append(records, verify.Record{Kind: verify.KindError, Error: fmt.Sprintf("bpffs: %v", err)})
	}
	defer os.RemoveAll(pinRoot)
	stateDir, err := os.MkdirTemp("", "bpfarm-verify-state-")
	if err != nil {
		return append(records, verify.Record{Kind: verify.KindError, Error: err.Error()})
	}
	defer os.RemoveAll(stateDir)

	n := 0
	for _, mode := range job.Modes {
		obj := art.Object
		if mode == verify.ModeRelocated {
			obj = art.Relocated
		}
		if len(obj) == 0 {
			continue // the artifact has no file for this mode
		}
		spec, _, err := kconfig.LoadSpec(obj)
		if err != nil {
			records = append(records, verify.Record{Kind: verify.KindError, Error: fmt.Sprintf("%s object: %v", mode, err)})
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(spec.Programs)) {
			ps := spec.Programs[name]
			res := loadOne(ctx, art, mode, name, fmt.Sprintf("p%d", n), pinRoot, stateDir, job.LogLines, ps.AttachType)
			res.Section, res.Type = ps.SectionName, ps.Type.String()
			records = append(records, verify.Record{Kind: verify.KindProgram, Program: res})
			n++
		}
	}
	return records
}

// loadOne loads one program of the artifact, load-only, with the agent's
// loader, and describes the kernel's verdict. A program whose attach type
// the kernel checks only when attaching (tcx: a kernel without tcx loads
// the program and refuses the link) is also attached, to lo, and detached.
func loadOne(ctx context.Context, art *loader.Artifact, mode, prog, set, pinRoot, stateDir string, logLines int, attach ebpf.AttachType) *verify.ProgramResult {
	res := &verify.ProgramResult{Program: prog, Mode: mode}
	a := *art
	a.Name = set
	opt := loader.Options{NoAttach: true, Mode: loader.Mode(mode), PinDir: pinRoot, StateDir: stateDir,
		Programs: []string{prog}}
	start := time.Now()
	l, err := loader.Load(ctx, &a, opt)
	res.LoadNS = time.Since(start).Nanoseconds()
	if err == nil {
		res.Accepted = true
		if st := l.Program(prog); st != nil && st.ID != 0 {
			if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(st.ID)); err == nil {
				if info, err := p.Info(); err == nil {
					if n, ok := info.VerifiedInstructions(); ok {
						res.Instructions = int(n)
					}
				}
				if attach == ebpf.AttachTCXIngress || attach == ebpf.AttachTCXEgress {
					res.Attached = true
					if err := attachTCX(p, attach); err != nil {
						res.Accepted, res.Error = false, "attach tcx to lo: "+firstLine(err.Error())
					}
				}
				p.Close()
			}
		}
		l.Close()
		return res
	}
	res.Error = firstLine(err.Error())
	var pe *loader.ProgramError
	if errors.As(err, &pe) {
		res.Error = firstLine(pe.Err.Error())
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) && len(ve.Log) > 0 {
		res.Verifier = true
		res.Instructions = verify.ProcessedInsns(ve.Log)
		if c := verify.Complaint(ve.Log); c != "" {
			res.Error = c
		}
		if strings.Contains(res.Error, kfuncPoison) {
			res.Error += " (a call to a weak kfunc this kernel lacks, poisoned by the loader)"
		}
		tail := ve.Log
		if len(tail) > logLines {
			tail = tail[len(tail)-logLines:]
		}
		res.Log = tail
	}
	return res
}

// attachTCX attaches a tcx program to lo and detaches it.
func attachTCX(p *ebpf.Program, attach ebpf.AttachType) error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	l, err := link.AttachTCX(link.TCXOptions{Program: p, Interface: lo.Index, Attach: attach})
	if err != nil {
		return err
	}
	return l.Close()
}

// kfuncPoison is how the verifier names a call to a missing weak kfunc,
// which cilium/ebpf replaces with a call to 0xdedc0de.
const kfuncPoison = "unknown#233685214"

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// guestInfo describes the running kernel.
func guestInfo(uptimeMS int64) *verify.GuestInfo {
	info := &verify.GuestInfo{UptimeMS: uptimeMS}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		info.Release = unix.ByteSliceToString(u.Release[:])
		info.Build = unix.ByteSliceToString(u.Version[:])
		info.Machine = unix.ByteSliceToString(u.Machine[:])
	}
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	info.BTF = err == nil
	if b, err := os.ReadFile("/proc/sys/net/core/bpf_jit_enable"); err == nil {
		info.JIT = strings.TrimSpace(string(b))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info.Runner = bi.Main.Path + " " + bi.Main.Version + " " + bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info.Runner += " " + s.Value
			}
		}
	}
	return info
}

// openConsole opens the serial console for the results.
func openConsole(dev string) io.Writer {
	for _, p := range []string{dev, "/dev/console"} {
		if p == "" {
			continue
		}
		if f, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			return f
		}
	}
	return os.Stdout
}

// quietConsole lowers the console log level to emergencies while the
// frames are written, so that kernel messages garble fewer of them; the
// returned function restores it.
func quietConsole() func() {
	const p = "/proc/sys/kernel/printk"
	old, err := os.ReadFile(p)
	if err != nil {
		return func() {}
	}
	os.WriteFile(p, []byte("1"), 0)
	return func() {
		if f := strings.Fields(string(old)); len(f) > 0 {
			os.WriteFile(p, []byte(f[0]), 0)
		}
	}
}

// fail reports that the runner could not do its job, then powers off.
func fail(job *verify.Job, err error) {
	nonce, console := "", ""
	if job != nil {
		nonce, console = job.Nonce, job.Console
	} else if raw, rerr := os.ReadFile(verify.JobPath); rerr == nil {
		if j, perr := verify.ParseJob(raw); perr == nil {
			nonce, console = j.Nonce, j.Console
		}
	}
	out := openConsole(console)
	fmt.Fprintf(out, "bpfarm-verifier: %v\n", err)
	if nonce != "" {
		verify.WriteFrames(out, nonce, []verify.Record{{Kind: verify.KindError, Error: err.Error()}}, 2)
	}
	powerOff(&verify.Job{PowerOff: true})
}

// powerOff ends the VM. PID 1 must not exit (the kernel would panic), so
// if power-off fails it halts, and the host's timeout ends the VM.
func powerOff(job *verify.Job) {
	if job == nil || !job.PowerOff {
		os.Exit(0)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
	for {
		time.Sleep(time.Hour)
	}
}

// runOutside runs a job on the running kernel: "run --root DIR [--job
// FILE]", frames to standard output.
func runOutside(args []string) int {
	root, jobPath := "", ""
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--root" && i+1 < len(args):
			root = args[i+1]
			i++
		case args[i] == "--job" && i+1 < len(args):
			jobPath = args[i+1]
			i++
		default:
			fmt.Fprintf(os.Stderr, "bpfarm-verifier run: unknown argument %q\n", args[i])
			return 2
		}
	}
	if root == "" {
		fmt.Fprintln(os.Stderr, "bpfarm-verifier run: --root DIR is required")
		return 2
	}
	if jobPath == "" {
		jobPath = filepath.Join(root, verify.JobPath)
	}
	raw, err := os.ReadFile(jobPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bpfarm-verifier: %v\n", err)
		return 1
	}
	job, err := verify.ParseJob(raw)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bpfarm-verifier: %v\n", err)
		return 1
	}
	records := run(context.Background(), job, root, 0)
	if err := verify.WriteFrames(os.Stdout, job.Nonce, records, 1); err != nil {
		fmt.Fprintf(os.Stderr, "bpfarm-verifier: %v\n", err)
		return 1
	}
	return 0
}
