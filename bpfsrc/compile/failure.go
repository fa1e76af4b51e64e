package compile

// How a compile's failure is told apart: the user's (*Error: the source,
// a resource limit, refused flags) or the farm's (*InfraError: a full or
// failing disk, the sandbox, the job directory), and the one line that
// says why.

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

// Error is a compile that failed because of what the user submitted:
// compile errors, a resource limit, refused flags or an unsupported target.
type Error struct {
	// Reason says in one line why the compile failed: the first error
	// diagnostic, or the limit that was hit.
	Reason string
	// Diagnostics are all of clang's diagnostics.
	Diagnostics []bpfsrc.Diagnostic
	// Log is clang's output, rewritten as Result.Log.
	Log string
}

// Error implements error.
func (e *Error) Error() string { return "compile failed: " + e.Reason }

// InfraError is a compile that failed because of the farm, not because of
// the request: the job directory or the sandbox could not be set up, the
// disk filled up (errors.Is(err, syscall.ENOSPC) or EDQUOT holds then),
// clang could not be run, the caller gave up. Trying again later may
// succeed, so it must never be recorded as the user's failure nor cached.
//
// Its Infra method marks it as an infrastructure fault for package
// server/fault (fault.IsInfra), which this package does not import.
type InfraError struct {
	Err error
}

// Error implements error.
func (e *InfraError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *InfraError) Unwrap() error { return e.Err }

// Infra reports true: the failure is the farm's.
func (e *InfraError) Infra() bool { return true }

// sandboxFailure returns an error if bubblewrap or prlimit, not clang,
// failed: they report as "bwrap: ..." and "prlimit: ...".
func (c *Compiler) sandboxFailure(res *runResult) error {
	if c.cfg.NoSandbox || res.code == 0 {
		return nil
	}
	for _, tool := range []string{"bwrap: ", "prlimit: "} {
		if bytes.HasPrefix(res.out, []byte(tool)) {
			return fmt.Errorf("sandbox: %s", firstLine(string(res.out)))
		}
	}
	return nil
}

// hostIOError returns an error wrapping the errno if clang failed because
// of the host's file systems rather than the source: an error of clang's
// (or the sandbox's) own, with no source location, naming a full disk
// (ENOSPC, EDQUOT: "error: unable to open output file 'prog.o': 'No space
// left on device'"), an I/O error or a read-only file system. An error the
// source raises (#error No space left on device) has a location and stays
// the user's.
func hostIOError(res *runResult) error {
	if res.code == 0 && res.sig == 0 {
		return nil
	}
	for _, line := range strings.Split(string(res.out), "\n") {
		if !isToolError(line) {
			continue
		}
		for _, e := range hostErrnos {
			if strings.Contains(line, e.Error()) || strings.Contains(line, llvmErrnoText[e]) {
				return fmt.Errorf("%s: %w", strings.TrimSpace(line), e)
			}
		}
	}
	return nil
}

// hostErrnos are the errors of the host's file systems that fail a
// compile through no fault of its source.
var hostErrnos = []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS}

// llvmErrnoText are LLVM's own messages for the errnos (std::errc), where
// they differ from the C library's.
var llvmErrnoText = map[syscall.Errno]string{
	syscall.ENOSPC: "No space left on device",
	syscall.EDQUOT: "Disk quota exceeded",
	syscall.EIO:    "Input/output error",
	syscall.EROFS:  "Read-only file system",
}

// isToolError reports whether line is an error of the compiler itself
// rather than a diagnostic about the source: "error: ...", "fatal error:
// ...", "clang: error: ...", "bwrap: ...", with no file location.
func isToolError(line string) bool {
	for _, p := range []string{"error: ", "fatal error: ", "bwrap: ", "prlimit: "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	tool, rest, ok := strings.Cut(line, ": ")
	if !ok || strings.ContainsAny(tool, " /.:") {
		return false
	}
	return strings.HasPrefix(rest, "error: ") || strings.HasPrefix(rest, "fatal error: ")
}

// limitReason tells which resource limit, if any, stopped clang.
func (c *Compiler) limitReason(res *runResult, log string) string {
	switch {
	case res.timedOut:
		return fmt.Sprintf("exceeded the %s time limit", formatDuration(c.cfg.Timeout))
	case res.sig == syscall.SIGXCPU,
		// The hard limit, one second after the soft one. The CPU time
		// of clang in the sandbox is not visible; its run time is a
		// lower bound.
		res.sig == syscall.SIGKILL && max(res.cpu, res.wall) >= time.Duration(c.cfg.CPUSeconds)*time.Second:
		return fmt.Sprintf("exceeded the %ds CPU time limit", c.cfg.CPUSeconds)
	case res.sig == syscall.SIGXFSZ, strings.Contains(log, "File too large"):
		return c.outputExceeds()
	case (res.code != 0 || res.sig != 0) && isOOM(log):
		return fmt.Sprintf("out of memory: exceeded the address-space limit (%s)", formatBytes(c.cfg.AddressSpace))
	case res.sig != 0:
		return fmt.Sprintf("clang crashed (%v)", res.sig)
	}
	return ""
}

// outputExceeds is the refusal of an output over MaxOutput.
func (c *Compiler) outputExceeds() string {
	r := "output exceeds " + formatBytes(c.cfg.MaxOutput)
	if c.cfg.MaxOutputName != "" {
		r += " (the server's " + c.cfg.MaxOutputName + ")"
	}
	return r
}

func isOOM(log string) bool {
	for _, m := range []string{"out of memory", "bad_alloc", "Allocation failed", "Cannot allocate memory"} {
		if strings.Contains(log, m) {
			return true
		}
	}
	return false
}

// isPCHError reports whether clang refused the precompiled header.
func isPCHError(out []byte) bool {
	for _, m := range []string{"PCH file", "precompiled header", "in PCH", "AST file"} {
		if bytes.Contains(out, []byte(m)) {
			return true
		}
	}
	return false
}

// failureReason is the one-line reason of a failed compile: the first error.
func failureReason(diags []bpfsrc.Diagnostic, log string, code int) string {
	for _, d := range diags {
		if d.Severity == bpfsrc.SeverityError || d.Severity == bpfsrc.SeverityFatal {
			return d.String()
		}
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "clang exited with status " + strconv.Itoa(code)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
