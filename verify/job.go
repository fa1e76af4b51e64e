package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Paths inside the initramfs.
const (
	JobPath       = "/bpfarm/job.json"
	ObjectPath    = "/bpfarm/object.bpf.o"
	RelocatedPath = "/bpfarm/relocated.bpf.o"
	MinBTFPath    = "/bpfarm/min.btf"
)

// JobVersion is the version of the Job format and of the serial protocol.
const JobVersion = 1

// Load modes of a job: the loader's modes, by their loader names.
const (
	// ModeRelocated loads the pre-relocated object, as an agent on a host
	// without BTF does.
	ModeRelocated = "relocated"
	// ModeHostBTF loads the CO-RE object relocated against the booted
	// kernel's own /sys/kernel/btf/vmlinux, as an agent on a host with BTF
	// does.
	ModeHostBTF = "host-btf"
)

// DefaultModes are the modes a job loads in.
var DefaultModes = []string{ModeRelocated, ModeHostBTF}

// Job is what the runner does, read from JobPath.
type Job struct {
	Version int `json:"version"`
	// Nonce tags every frame of the answer.
	Nonce string `json:"nonce"`
	// Program and Revision name the artifact (for the records).
	Program  string `json:"program"`
	Revision string `json:"revision,omitempty"`
	// Kernel is the archive's kernel id; Release the release the booted
	// kernel must report (uname -r), when known.
	Kernel  string `json:"kernel,omitempty"`
	Release string `json:"release,omitempty"`
	// Console is the serial device to write the results to, e.g.
	// /dev/ttyS0 (/dev/console when empty or missing).
	Console string `json:"console,omitempty"`
	// Modes lists the load modes, in order (DefaultModes when empty).
	Modes []string `json:"modes,omitempty"`
	// LogLines is how many lines of a verifier log to keep (default 20).
	LogLines int `json:"log_lines,omitempty"`
	// PowerOff is false only in tests that run the runner outside a VM.
	PowerOff bool `json:"power_off"`
}

// Record kinds.
const (
	KindInfo    = "info"
	KindProgram = "program"
	KindError   = "error"
)

// Record is one framed record of the runner's answer.
type Record struct {
	Kind string `json:"kind"`
	// Info (kind info): what was booted.
	Info *GuestInfo `json:"info,omitempty"`
	// Program (kind program): one program's verdict in one mode.
	Program *ProgramResult `json:"program,omitempty"`
	// Error (kind error): the runner could not do its job.
	Error string `json:"error,omitempty"`
}

// GuestInfo describes the booted kernel, as the runner sees it.
type GuestInfo struct {
	Release string `json:"release"` // uname -r
	Build   string `json:"build"`   // uname -v
	Machine string `json:"machine"` // uname -m
	// UptimeMS is the kernel's uptime when /init started (guest clock).
	UptimeMS int64 `json:"uptime_ms"`
	// BTF reports whether /sys/kernel/btf/vmlinux exists.
	BTF bool `json:"btf"`
	// JIT is net.core.bpf_jit_enable ("" if unreadable).
	JIT string `json:"jit,omitempty"`
	// Runner is the runner's version (its Go build info).
	Runner string `json:"runner,omitempty"`
}

// ProgramResult is one program's verdict in one mode.
type ProgramResult struct {
	Program string `json:"program"`
	Section string `json:"section,omitempty"`
	Type    string `json:"type,omitempty"`
	Mode    string `json:"mode"`
	// Accepted: the kernel loaded the program.
	Accepted bool `json:"accepted"`
	// Verifier: a rejection came from the kernel's verifier (with a log),
	// not from an earlier step (a missing kfunc, map, BTF...).
	Verifier bool `json:"verifier,omitempty"`
	// Instructions is the number of instructions the verifier processed
	// (verified_insns, or "processed N insns" from the log).
	Instructions int `json:"instructions,omitempty"`
	// Attached: the program was also attached (to lo) and detached, as
	// tcx programs are, whose attach type a kernel checks only then.
	Attached bool `json:"attached,omitempty"`
	// LoadNS is the wall time of the load, guest clock.
	LoadNS int64 `json:"load_ns"`
	// Error is why the program was rejected: the verifier's complaint.
	Error string `json:"error,omitempty"`
	// Log is the tail of the verifier log of a rejection.
	Log []string `json:"log,omitempty"`
}

// ParseJob decodes and checks a job.
func ParseJob(b []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("job: %w", err)
	}
	if j.Version != JobVersion {
		return nil, fmt.Errorf("job: version %d, this runner speaks %d", j.Version, JobVersion)
	}
	if !nonceRE.MatchString(j.Nonce) {
		return nil, errors.New("job: bad nonce")
	}
	if len(j.Modes) == 0 {
		j.Modes = DefaultModes
	}
	for _, m := range j.Modes {
		if m != ModeRelocated && m != ModeHostBTF {
			return nil, fmt.Errorf("job: mode %q: want %s or %s", m, ModeRelocated, ModeHostBTF)
		}
	}
	if j.LogLines <= 0 {
		j.LogLines = 20
	}
	return &j, nil
}

var nonceRE = regexp.MustCompile(`^[0-9a-f]{8,64}$`)

var processedRE = regexp.MustCompile(`processed (\d+) insns`)

// ProcessedInsns finds "processed N insns" in a verifier log; 0 if absent.
func ProcessedInsns(log []string) int {
	for i := len(log) - 1; i >= 0; i-- {
		if m := processedRE.FindStringSubmatch(log[i]); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return 0
}

// Complaint picks the verifier's complaint from a rejection's log: the last
// line that is not a statistic, an instruction dump or a register state.
func Complaint(log []string) string {
	for i := len(log) - 1; i >= 0; i-- {
		l := strings.TrimSpace(log[i])
		switch {
		case l == "", processedRE.MatchString(l), strings.HasPrefix(l, "verification time"),
			strings.HasPrefix(l, "stack depth"), strings.HasPrefix(l, "-- END PROG LOAD LOG --"):
			continue
		}
		return l
	}
	return ""
}
