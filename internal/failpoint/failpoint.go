// Package failpoint places test hooks between the server's state changes:
// a crash test arms one by name, and the process dies there, abruptly
// (SIGKILL), as if the machine had lost power at that very moment. A
// random kill rarely lands between two particular writes; a failpoint
// always does.
//
// Failpoints are armed by the environment variable BPFARM_FAILPOINTS, read
// once at start: a comma-separated list of NAME, NAME=crash (the default
// action), NAME=error (Error returns ErrInjected there instead), each with
// an optional @N: act on the Nth time the point is reached (default 1).
//
//	BPFARM_FAILPOINTS=build/before-finish@2,relocate/claimed=error
//
// With nothing armed, Hit and Error cost one atomic load.
package failpoint

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Env is the environment variable that arms failpoints.
const Env = "BPFARM_FAILPOINTS"

// ErrInjected is the error an armed failpoint with action "error" returns.
var ErrInjected = errors.New("failpoint: injected fault")

// Action is what an armed failpoint does.
type Action string

const (
	// Crash kills the process with SIGKILL.
	Crash Action = "crash"
	// Fail makes Error return ErrInjected (Hit ignores it).
	Fail Action = "error"
)

type point struct {
	action Action
	nth    int // act on this hit
	hits   int
}

var (
	armed  atomic.Bool
	mu     sync.Mutex
	points = map[string]*point{}
)

func init() {
	if v := os.Getenv(Env); v != "" {
		if err := Parse(v); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", Env, err)
			os.Exit(2)
		}
	}
}

// Parse arms the failpoints of spec (the syntax of BPFARM_FAILPOINTS).
func Parse(spec string) error {
	for _, f := range strings.Split(spec, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		nth := 1
		if i := strings.LastIndexByte(f, '@'); i >= 0 {
			n, err := strconv.Atoi(f[i+1:])
			if err != nil || n < 1 {
				return fmt.Errorf("failpoint %q: @N wants a positive count", f)
			}
			f, nth = f[:i], n
		}
		name, action, _ := strings.Cut(f, "=")
		if action == "" {
			action = string(Crash)
		}
		if a := Action(action); a != Crash && a != Fail {
			return fmt.Errorf("failpoint %q: action %q: want crash or error", name, action)
		}
		Enable(name, Action(action), nth)
	}
	return nil
}

// Enable arms the failpoint name: it acts on its nth hit (and, for Fail,
// on every later one until Disable).
func Enable(name string, a Action, nth int) {
	mu.Lock()
	defer mu.Unlock()
	points[name] = &point{action: a, nth: max(nth, 1)}
	armed.Store(true)
}

// Disable disarms the failpoint name.
func Disable(name string) {
	mu.Lock()
	defer mu.Unlock()
	delete(points, name)
	armed.Store(len(points) > 0)
}

// Hit marks the failpoint name: armed to crash, it kills the process there.
func Hit(name string) {
	if !armed.Load() {
		return
	}
	if act(name) == Crash {
		crash(name)
	}
}

// crash kills the process at the failpoint name.
func crash(name string) {
	fmt.Fprintf(os.Stderr, "failpoint %s: crashing\n", name)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // until the signal is delivered
}

// Error marks the failpoint name like Hit, and returns ErrInjected there
// when it is armed to fail.
func Error(name string) error {
	if !armed.Load() {
		return nil
	}
	switch act(name) {
	case Crash:
		crash(name)
	case Fail:
		return fmt.Errorf("%w at %s", ErrInjected, name)
	}
	return nil
}

// act counts a hit of name and returns the action due now, if any.
func act(name string) Action {
	mu.Lock()
	defer mu.Unlock()
	p, ok := points[name]
	if !ok {
		return ""
	}
	p.hits++
	if p.hits < p.nth || (p.action == Crash && p.hits > p.nth) {
		return ""
	}
	return p.action
}
