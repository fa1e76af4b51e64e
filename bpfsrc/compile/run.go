package compile

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// bind is a host path made visible in the sandbox.
type bind struct {
	host, sandbox string
	rw            bool
}

// runSpec is one run of clang.
type runSpec struct {
	binds   []bind   // besides clang's own files
	dirs    []string // empty directories to create in the sandbox
	chdir   string   // working directory in the sandbox
	hostDir string   // working directory without the sandbox
	args    []string // clang's arguments, without argv[0]
	fsize   int64    // RLIMIT_FSIZE; 0 means Config.MaxOutput
	// noASLR runs clang without address space layout randomization. With
	// a precompiled header, clang 19 orders forward declarations in .BTF
	// by address, so the object would change from run to run.
	noASLR bool
}

// runResult is how a run of clang ended.
type runResult struct {
	out       []byte // stdout and stderr, up to a bound
	truncated bool
	code      int            // exit status, if not killed by a signal
	sig       syscall.Signal // the signal that killed clang, or 0
	timedOut  bool           // killed because Config.Timeout passed
	cpu       time.Duration  // of the direct child only: not clang in the sandbox
	wall      time.Duration
}

// bwrapArgs returns the bubblewrap command line (after "bwrap") for spec.
//
// The sandbox has a fresh namespace of every kind (so no network but a
// private loopback), a read-only tmpfs root holding only clang's installation
// tree, its shared libraries and the dynamic loader, the farm headers
// read-only, the job's sources read-only at /src and a writable /out. There
// is no /proc, /sys, /etc or /home. clang runs as nobody with no
// capabilities, no way to create user namespaces, no environment but PATH
// and LLVM_DISABLE_SYMBOLIZATION, in a new session, and is killed if the
// farm dies.
func (c *Compiler) bwrapArgs(spec *runSpec) []string {
	args := []string{
		"--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns",
		"--hostname", "bpfarm", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
		"--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
		// A crash or a CPU limit makes LLVM print a stack dump;
		// symbolizing it takes long enough to hit the hard limit.
		"--setenv", "LLVM_DISABLE_SYMBOLIZATION", "1",
		"--dev", "/dev",
		"--size", strconv.Itoa(16 << 20), "--tmpfs", "/tmp",
	}
	args = append(args, c.tools.bwrapArgs()...)
	for _, b := range spec.binds {
		op := "--ro-bind"
		if b.rw {
			op = "--bind"
		}
		args = append(args, op, b.host, b.sandbox)
	}
	for _, d := range spec.dirs {
		args = append(args, "--dir", d)
	}
	args = append(args, "--remount-ro", "/", "--chdir", spec.chdir, "--", c.clang)
	return append(args, spec.args...)
}

// run runs clang for spec: in the sandbox under resource limits, or bare
// with Config.NoSandbox. It returns an error only if clang could not be run;
// how clang ended is in the result.
func (c *Compiler) run(parent context.Context, spec *runSpec) (*runResult, error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()

	var cmd *exec.Cmd
	var setarch []string
	if spec.noASLR && c.setarch != "" {
		setarch = []string{c.setarch, "-R"}
	}
	if c.cfg.NoSandbox {
		argv := append(append(setarch, c.clang), spec.args...)
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir = spec.hostDir
	} else {
		fsize := spec.fsize
		if fsize <= 0 {
			fsize = c.cfg.MaxOutput
		}
		cpu := strconv.Itoa(c.cfg.CPUSeconds)
		args := []string{
			"--as=" + strconv.FormatInt(c.cfg.AddressSpace, 10),
			"--cpu=" + cpu + ":" + strconv.Itoa(c.cfg.CPUSeconds+1),
			"--fsize=" + strconv.FormatInt(fsize, 10),
			"--nofile=1024",
			"--core=0",
			"--",
		}
		args = append(append(args, setarch...), c.bwrap)
		cmd = exec.CommandContext(ctx, c.prlimit, append(args, c.bwrapArgs(spec)...)...)
		cmd.Dir = "/"
	}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LLVM_DISABLE_SYMBOLIZATION=1"}
	// Own process group, killed whole on timeout; bubblewrap's
	// --die-with-parent takes the sandbox down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	out := &capWriter{max: 2*c.cfg.MaxLog + 4096}
	cmd.Stdout = out
	cmd.Stderr = out
	start := time.Now()
	err := cmd.Run()

	res := &runResult{out: out.buf, truncated: out.dropped, wall: time.Since(start)}
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			res.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				res.sig = ws.Signal()
			case ws.Exited():
				res.code = ws.ExitStatus()
				// bubblewrap and clang report death by signal N
				// as exit status 128+N.
				if !c.cfg.NoSandbox && res.code > 128 && res.code < 128+65 {
					res.sig = syscall.Signal(res.code - 128)
				}
			}
		}
	}
	if err := parent.Err(); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		res.timedOut = true
		return res, nil
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return nil, err
	}
	return res, nil
}

// capWriter keeps the first max bytes written to it and drops the rest.
type capWriter struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - len(w.buf); room > 0 {
		w.buf = append(w.buf, p[:min(room, len(p))]...)
	}
	if len(w.buf) >= w.max && len(p) > 0 {
		w.dropped = true
	}
	return len(p), nil
}
