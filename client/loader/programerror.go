package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
)

// verifierTailLines is how many lines of the verifier log a load error
// shows.
const verifierTailLines = 20

// ProgramError is why one program of a set failed to load or attach. Load
// and Swap return every program's failure, joined with errors.Join; use
// errors.As to get one, and errors.As with *ebpf.VerifierError to get the
// verifier's full log.
type ProgramError struct {
	// Program is the program's name.
	Program string
	// Section is its ELF section.
	Section string
	// Op is "load", "attach" or "pin".
	Op  string
	Err error
}

// Error describes the failure; a verifier rejection is followed by the last
// lines of the verifier log.
func (e *ProgramError) Error() string {
	var msg string
	if he, ok := e.Err.(*hookError); ok {
		// The hook error names the hook: add the program.
		msg = fmt.Sprintf("%s %s (program %s): %s", he.op, he.hook, e.Program, he.detail())
	} else {
		msg = fmt.Sprintf("%s program %s (%s): %v", e.Op, e.Program, e.Section, e.Err)
	}
	var ve *ebpf.VerifierError
	if errors.As(e.Err, &ve) && len(ve.Log) > 0 {
		msg += "\n" + verifierTail(ve.Log, verifierTailLines)
	}
	return msg
}

// Unwrap returns Err.
func (e *ProgramError) Unwrap() error { return e.Err }

// verifierTail formats the last n lines of a verifier log, where the
// failing instruction and the verifier's complaint are.
func verifierTail(log []string, n int) string {
	tail := log
	if len(tail) > n {
		tail = tail[len(tail)-n:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "verifier log (last %d of %d lines):", len(tail), len(log))
	for _, l := range tail {
		b.WriteString("\n    ")
		b.WriteString(l)
	}
	return b.String()
}

// hookError is a failure to load or attach a program at its hook.
type hookError struct {
	op   string // "load" or "attach"
	hook string // e.g. "kprobe/do_sys_openat2"
	why  string // the missing kernel feature, or ""
	err  error
}

func (e *hookError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.op, e.hook, e.detail())
}

func (e *hookError) detail() string {
	// The loader removed the memlock limit: cilium/ebpf's hint about it
	// is beside the point.
	msg := strings.ReplaceAll(e.err.Error(), " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", "")
	if e.why == "" {
		return msg
	}
	return e.why + ": " + msg
}

func (e *hookError) Unwrap() error { return e.err }
