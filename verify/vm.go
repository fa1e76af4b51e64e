package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// VM outcomes (Outcome.Status).
const (
	// StatusComplete: the runner's complete result set arrived.
	StatusComplete = "complete"
	// StatusKernelError: the VM stopped without a result set: a kernel
	// panic, a kernel that could not start /init, garbage on the console.
	StatusKernelError = "kernel-error"
	// StatusTimeout: the VM did not finish within its timeout and was
	// killed.
	StatusTimeout = "timeout"
)

// Defaults of a VM.
const (
	DefaultMemory     = "512M"
	DefaultTimeoutTCG = 60 * time.Second
	DefaultTimeoutKVM = 30 * time.Second
	// DefaultCmdline is the kernel command line (the console is added per
	// arch).
	DefaultCmdline = "panic=-1 quiet"
	// consoleKeep bounds the console output kept whole; beyond it only
	// the tail is kept.
	consoleKeep = 1 << 20
	// consoleTail is the size of the kept tail.
	consoleTail = 64 << 10
	// consoleFlood stops a VM that prints more than this.
	consoleFlood = 64 << 20
	// powerOffGrace is how long a VM that answered may take to power off
	// before it is killed.
	powerOffGrace = 3 * time.Second
	// tbSizeMiB bounds TCG's translation cache (qemu's default is up to
	// 1 GiB of address space).
	tbSizeMiB = 256
)

// Arch describes how to boot kernels of one arch.
type Arch struct {
	Name    string   // x86_64, arm64
	Qemu    string   // qemu binary name
	Machine []string // machine arguments
	Console string   // serial console of the kernel command line, e.g. ttyS0
	GOARCH  string   // host GOARCH that can run it under KVM
	// Cmdline is added to every kernel command line of the arch.
	Cmdline string
}

// Arches the verifier boots.
var Arches = map[string]Arch{
	// no_timer_check: under TCG on a busy host, the emulated IO-APIC timer
	// can miss the kernel's early check, which then panics ("IO-APIC +
	// timer doesn't work!") before /init runs.
	"x86_64": {Name: "x86_64", Qemu: "qemu-system-x86_64", Console: "ttyS0", GOARCH: "amd64", Cmdline: "no_timer_check"},
	"arm64":  {Name: "arm64", Qemu: "qemu-system-aarch64", Machine: []string{"-M", "virt"}, Console: "ttyAMA0", GOARCH: "arm64"},
}

// ErrNoQemu is returned (wrapped) when the arch's qemu is not installed.
var ErrNoQemu = errors.New("qemu not installed")

// QemuFor returns the path of the qemu binary for arch, or an error
// wrapping ErrNoQemu that says what to install.
func QemuFor(arch string) (string, error) {
	a, ok := Arches[arch]
	if !ok {
		return "", fmt.Errorf("arch %q: the verifier boots %s", arch, strings.Join(archNames(), ", "))
	}
	p, err := exec.LookPath(a.Qemu)
	if err != nil {
		pkg := "qemu-system-x86"
		if arch == "arm64" {
			pkg = "qemu-system-arm"
		}
		return "", fmt.Errorf("%s kernels need %s (apt-get install %s): %w", arch, a.Qemu, pkg, ErrNoQemu)
	}
	return p, nil
}

func archNames() []string {
	var out []string
	for n := range Arches {
		out = append(out, n)
	}
	return out
}

// VM is one verifier VM run.
type VM struct {
	Arch   string // x86_64 (default) or arm64
	Qemu   string // qemu binary; by default found on $PATH for Arch
	Kernel string // kernel image (vmlinuz)
	Initrd string // initramfs; none when empty
	// Cmdline replaces DefaultCmdline (the console=... is always first).
	Cmdline string
	Memory  string // guest memory, default DefaultMemory
	// Accel is "kvm", "tcg" or "" (KVM when it works, see KVMWorks).
	Accel string
	// Timeout bounds the VM's wall-clock time (default DefaultTimeoutTCG,
	// or DefaultTimeoutKVM under KVM).
	Timeout time.Duration
	// Nonce is the job's; without it no result set is looked for.
	Nonce string
	// Log, when set, receives the console as it arrives.
	Log io.Writer
}

// Outcome is what happened in a VM.
type Outcome struct {
	Status  string   // StatusComplete, StatusKernelError or StatusTimeout
	Reason  string   // why, when not complete
	Records []Record // the result set when complete
	Accel   string
	// Console is the console output: whole up to 1 MiB, then its last
	// 64 KiB after a marker. Tail is the last lines of it.
	Console []byte
	Tail    string
	// Garbled counts frame lines refused for a bad checksum.
	Garbled int
	// Boot is the wall time from the start of qemu to the runner's first
	// frame; Duration to the end of the VM.
	Boot     time.Duration
	Duration time.Duration
}

// panicRE finds the kernel's panic message.
var panicRE = regexp.MustCompile(`Kernel panic - not syncing:[^\r\n]*`)

// Run boots the VM and waits for its outcome. It returns an error only
// when the VM could not be started at all (no qemu, bad arguments); a
// kernel that panics, hangs or prints garbage is an Outcome.
func (vm *VM) Run(ctx context.Context) (*Outcome, error) {
	arch := vm.Arch
	if arch == "" {
		arch = "x86_64"
	}
	a, ok := Arches[arch]
	if !ok {
		return nil, fmt.Errorf("arch %q: the verifier boots %s", arch, strings.Join(archNames(), ", "))
	}
	qemu := vm.Qemu
	if qemu == "" {
		var err error
		if qemu, err = QemuFor(arch); err != nil {
			return nil, err
		}
	}
	accel := vm.Accel
	if accel == "" {
		accel = "tcg"
		if KVMWorks(ctx, arch, qemu, vm.Kernel) {
			accel = "kvm"
		}
	}
	timeout := vm.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeoutTCG
		if accel == "kvm" {
			timeout = DefaultTimeoutKVM
		}
	}
	mem := vm.Memory
	if mem == "" {
		mem = DefaultMemory
	}
	cmdline := vm.Cmdline
	if cmdline == "" {
		cmdline = DefaultCmdline
	}
	if a.Cmdline != "" {
		cmdline += " " + a.Cmdline
	}
	args := vm.args(a, accel, mem, "console="+a.Console+" "+cmdline)
	out := &Outcome{Accel: accel}
	res, err := runQemu(ctx, qemu, args, memLimit(mem), timeout, vm.Nonce, vm.Log)
	if err != nil {
		return nil, err
	}
	out.Console, out.Tail, out.Duration, out.Boot, out.Garbled = res.console, res.tail, res.duration, res.boot, res.garbled
	switch {
	case res.records != nil:
		out.Status, out.Records = StatusComplete, res.records
	case res.timedOut:
		out.Status = StatusTimeout
		out.Reason = fmt.Sprintf("no result within %s: the VM was killed", timeout)
		if res.begun {
			out.Reason = fmt.Sprintf("the runner started answering but its result set was incomplete after %s: the VM was killed", timeout)
		}
		if m := panicRE.Find(res.console); m != nil {
			out.Reason += " (" + string(m) + ")"
		}
	case res.flood:
		out.Status, out.Reason = StatusKernelError, fmt.Sprintf("the VM printed more than %d MiB: killed", consoleFlood>>20)
	default:
		out.Status = StatusKernelError
		switch m := panicRE.Find(res.console); {
		case m != nil:
			out.Reason = string(m)
		case res.stderr != "":
			out.Reason = "qemu: " + res.stderr
		case res.begun:
			out.Reason = fmt.Sprintf("the VM stopped after %s with an incomplete result set (%d garbled frame lines)",
				res.duration.Round(time.Millisecond), res.garbled)
		default:
			out.Reason = fmt.Sprintf("the VM stopped after %s without a result set", res.duration.Round(time.Millisecond))
			if last := lastLine(res.console); last != "" {
				out.Reason += "; last console line: " + last
			} else {
				out.Reason += " and without any console output"
			}
		}
		if res.garbled > 0 && !res.begun {
			out.Reason += fmt.Sprintf(" (%d garbled frame lines)", res.garbled)
		}
	}
	return out, nil
}

// args builds qemu's command line.
func (vm *VM) args(a Arch, accel, mem, cmdline string) []string {
	args := []string{"-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
		"-serial", "stdio", "-m", mem, "-smp", "1"}
	args = append(args, a.Machine...)
	switch accel {
	case "kvm":
		args = append(args, "-accel", "kvm")
		if a.Name == "arm64" {
			args = append(args, "-cpu", "host")
		}
	default:
		args = append(args, "-accel", "tcg,tb-size="+strconv.Itoa(tbSizeMiB))
		if a.Name == "arm64" {
			args = append(args, "-cpu", "max")
		}
	}
	args = append(args, "-kernel", vm.Kernel, "-append", cmdline)
	if vm.Initrd != "" {
		args = append(args, "-initrd", vm.Initrd)
	}
	return args
}

// memLimit is the address-space limit of a qemu process with guest memory
// mem: the guest's memory, the translation cache, and 1 GiB for qemu.
func memLimit(mem string) uint64 {
	n, err := parseSize(mem)
	if err != nil {
		n = 512 << 20
	}
	return n + tbSizeMiB<<20 + 1<<30
}

// parseSize parses qemu's memory sizes: a number with an optional K, M, G
// suffix (M when none).
func parseSize(s string) (uint64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := uint64(1 << 20)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		s = s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory size %q: %w", s, err)
	}
	return n * mult, nil
}

// qemuResult is what runQemu saw.
type qemuResult struct {
	records  []Record
	begun    bool
	garbled  int
	timedOut bool
	flood    bool
	console  []byte
	tail     string
	stderr   string
	boot     time.Duration
	duration time.Duration
}

// runQemu runs qemu in its own process group, under prlimit when present,
// until it exits, ctx ends or timeout passes, and parses its console.
func runQemu(ctx context.Context, qemu string, args []string, asLimit uint64, timeout time.Duration, nonce string, log io.Writer) (*qemuResult, error) {
	name, argv := qemu, args
	if pl, err := exec.LookPath("prlimit"); err == nil {
		name = pl
		argv = append([]string{fmt.Sprintf("--as=%d", asLimit), "--core=0", "--", qemu}, args...)
	}
	cmd := exec.Command(name, argv...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	stderr := &limitedBuffer{max: 4 << 10}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, pw, stderr
	setProcAttr(cmd)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", qemu, err)
	}
	pw.Close()
	kill := func() { killGroup(cmd) }

	res := &qemuResult{}
	var parser *Parser
	if nonce != "" {
		parser = NewParser(nonce)
	}
	cons := &consoleBuffer{}
	answered := make(chan struct{})
	flood := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		br := bufio.NewReaderSize(pr, 64<<10)
		var total int64
		signalled := false
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				total += int64(len(line))
				cons.Write(line)
				if log != nil {
					log.Write(line)
				}
				if parser != nil && !signalled {
					parser.Line(string(line))
					if res.boot == 0 && parser.Begun() {
						res.boot = time.Since(start)
					}
					if _, ok := parser.Done(); ok {
						signalled = true
						close(answered)
					}
				}
				if total > consoleFlood {
					close(flood)
					return
				}
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var grace <-chan time.Time
	exited := false
wait:
	for {
		select {
		case <-waitDone:
			exited = true
			break wait
		case <-answered:
			answered = nil
			grace = time.After(powerOffGrace)
		case <-grace:
			break wait
		case <-flood:
			res.flood = true
			break wait
		case <-timer.C:
			res.timedOut = true
			break wait
		case <-ctx.Done():
			kill()
			<-waitDone
			<-readDone
			return nil, ctx.Err()
		}
	}
	// Whatever is left of the process group goes now.
	kill()
	if !exited {
		<-waitDone
	}
	<-readDone
	res.duration = time.Since(start)
	if parser != nil {
		res.begun, res.garbled = parser.Begun(), parser.Garbled()
		if recs, ok := parser.Done(); ok {
			res.records = recs
			res.timedOut, res.flood = false, false
		}
	}
	res.console = cons.Bytes()
	res.tail = tailLines(res.console, 40)
	res.stderr = strings.TrimSpace(stderr.String())
	return res, nil
}

// consoleBuffer keeps the first consoleKeep bytes and a tail.
type consoleBuffer struct {
	head    bytes.Buffer
	tail    []byte
	dropped int64
}

func (c *consoleBuffer) Write(b []byte) {
	if room := consoleKeep - c.head.Len(); room > 0 {
		n := min(room, len(b))
		c.head.Write(b[:n])
		b = b[n:]
	}
	if len(b) == 0 {
		return
	}
	c.tail = append(c.tail, b...)
	if len(c.tail) > 2*consoleTail {
		cut := len(c.tail) - consoleTail
		c.dropped += int64(cut)
		c.tail = append(c.tail[:0], c.tail[cut:]...)
	}
}

// Bytes returns the kept console.
func (c *consoleBuffer) Bytes() []byte {
	out := bytes.Clone(c.head.Bytes())
	if len(c.tail) > 0 {
		tail := c.tail
		if len(tail) > consoleTail {
			c.dropped += int64(len(tail) - consoleTail)
			tail = tail[len(tail)-consoleTail:]
		}
		if c.dropped > 0 {
			out = append(out, fmt.Sprintf("\n[... %d bytes of console output omitted ...]\n", c.dropped)...)
		}
		out = append(out, tail...)
	}
	return out
}

// tailLines returns the last n lines of b, without carriage returns.
func tailLines(b []byte, n int) string {
	s := strings.ReplaceAll(string(b), "\r", "")
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lastLine returns the last non-empty line of the console, without
// terminal escapes, cut to 200 bytes.
func lastLine(b []byte) string {
	lines := strings.Split(strings.ReplaceAll(string(b), "\r", "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(escapeRE.ReplaceAllString(lines[i], ""))
		if l != "" {
			if len(l) > 200 {
				l = l[:200]
			}
			return l
		}
	}
	return ""
}

// escapeRE matches terminal escape sequences (SeaBIOS clears the screen).
var escapeRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\x1bc`)

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// kvm remembers, per qemu binary, whether KVM works.
var kvm struct {
	mu    sync.Mutex
	works map[string]bool
}

// kvmProbeTimeout bounds the probe boot under KVM.
const kvmProbeTimeout = 8 * time.Second

// KVMWorks reports whether qemu can run arch's kernels under KVM: the host
// has the same arch, /dev/kvm opens, and kernel, booted under KVM without
// an initramfs, reaches its "no root file system" panic in time (a
// /dev/kvm that opens is not enough: nested set-ups can hang in KVM_RUN).
// The answer is remembered per qemu binary.
func KVMWorks(ctx context.Context, arch, qemu, kernel string) bool {
	a, ok := Arches[arch]
	if !ok || a.GOARCH != runtime.GOARCH {
		return false
	}
	kvm.mu.Lock()
	defer kvm.mu.Unlock()
	if w, ok := kvm.works[qemu]; ok {
		return w
	}
	works := probeKVM(ctx, a, qemu, kernel)
	if ctx.Err() != nil {
		return works // do not remember a probe cut short
	}
	if kvm.works == nil {
		kvm.works = map[string]bool{}
	}
	kvm.works[qemu] = works
	return works
}

func probeKVM(ctx context.Context, a Arch, qemu, kernel string) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	if kernel == "" {
		return false
	}
	vm := &VM{Kernel: kernel}
	args := vm.args(a, "kvm", "256M", "console="+a.Console+" panic=-1")
	res, err := runQemu(ctx, qemu, args, memLimit("256M"), kvmProbeTimeout, "", nil)
	if err != nil || res.timedOut {
		return false
	}
	return panicRE.Match(res.console)
}

// SetKVM overrides the KVM probe's answer for qemu (tests, and servers
// told which accelerator to use).
func SetKVM(qemu string, works bool) {
	kvm.mu.Lock()
	defer kvm.mu.Unlock()
	if kvm.works == nil {
		kvm.works = map[string]bool{}
	}
	kvm.works[qemu] = works
}
