package loader

import (
	"errors"
	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"io"
	"io/fs"
	"time"

	"github.com/cilium/ebpf/btf"
)

// Default locations.
const (
	// DefaultPinDir is where a program set's maps, programs and links are
	// pinned, under DefaultPinDir/NAME/.
	DefaultPinDir = "/sys/fs/bpf/bpfarm"
	// DefaultStateDir holds one JSON state file per loaded program set:
	// bpffs cannot hold regular files.
	DefaultStateDir = "/run/bpfarm"
	// DefaultPerfFreq is the sample frequency of perf_event programs, in Hz.
	DefaultPerfFreq = 99
	// DefaultCgroupPath is where cgroup programs attach by default. On
	// hybrid cgroup hierarchies, where it is not a cgroup2 file system, the
	// cgroup2 hierarchy mounted at DefaultCgroupPath/unified is used.
	DefaultCgroupPath = "/sys/fs/cgroup"
)

// ErrNotLoaded is returned (wrapped) by Unload and Adopt for a set that is
// not loaded. It matches os.ErrNotExist too.
var ErrNotLoaded = notLoadedError{}

type notLoadedError struct{}

func (notLoadedError) Error() string        { return "not loaded" }
func (notLoadedError) Is(target error) bool { return target == fs.ErrNotExist }

// Artifact is what the loader needs: a program's files for this host's
// kernel, as the server serves them (the manifest's "object", "min_btf" and
// "relocated" files).
type Artifact struct {
	// Name names the program set: its pins live under PinDir/NAME and its
	// state in StateDir/NAME.json. It is made of letters, digits, '.', '_'
	// and '-', and starts with a letter, digit or '_' (bpffs refuses dots
	// in names: the pin directory has '~' for each '.').
	Name string
	// Revision is the artifact's revision, recorded in the state.
	Revision string
	// Object is the CO-RE object, as compiled.
	Object []byte
	// MinBTF is the kernel's BTF minimized for Object (may be nil).
	MinBTF []byte
	// Relocated is Object pre-relocated for this kernel (may be nil).
	Relocated []byte
	// KernelBTF is the lower-case hex sha256 of the kernel BTF that
	// Relocated was relocated against (the manifest's kernel_btf), or "".
	KernelBTF string
}

// Mode is how CO-RE relocations are resolved.
type Mode string

// Modes.
const (
	// ModeAuto uses the host's BTF (/sys/kernel/btf/vmlinux, or
	// Options.KernelBTF) when present, else the artifact's MinBTF, else its
	// Relocated object. When the host's BTF is byte for byte the BTF the
	// artifact was relocated against (Artifact.KernelBTF), the Relocated
	// object is exactly what relocating against it would give, and it is
	// loaded instead: hashing the BTF costs a fraction of parsing it.
	ModeAuto Mode = "auto"
	// ModeHostBTF loads the CO-RE object, relocated by cilium/ebpf against
	// the host's BTF (Options.KernelBTF when set).
	ModeHostBTF Mode = "host-btf"
	// ModeMinBTF loads the CO-RE object, relocated against the artifact's
	// minimized BTF.
	ModeMinBTF Mode = "min-btf"
	// ModeRelocated loads the pre-relocated object: no CO-RE relocations
	// are left, and no kernel BTF is consulted for CO-RE (programs that
	// attach by BTF ID, such as tp_btf, still need the kernel's BTF to find
	// their target, as the kernel itself does).
	ModeRelocated Mode = "relocated"
)

// Options control Load, Swap, Unload, Status and Adopt.
type Options struct {
	// Kconfig is where .kconfig externs take their values; the zero
	// value reads the running kernel's (config, version, features).
	Kconfig kconfig.Host
	// PinDir is the bpffs directory under which each set's maps, programs
	// and links are pinned, in PinDir/NAME/{maps,progs,links}/. Default
	// DefaultPinDir.
	PinDir string
	// StateDir holds a JSON state file per loaded set. Default
	// DefaultStateDir.
	StateDir string
	// Programs, when not empty, loads only these programs (by program
	// name); the others are not loaded at all, like libbpf's
	// autoload=false. An unknown name is an error naming the available
	// ones.
	Programs []string
	// NoAttach loads and pins the programs under PinDir/NAME/progs/PROG
	// without attaching them, like bpftool prog loadall.
	NoAttach bool
	// Set rewrites const volatile globals (.rodata) before loading, by
	// variable name: integers (decimal, or hex with 0x, range-checked
	// against the variable's size and signedness from BTF), bools, enums
	// by name or value, and char arrays from strings.
	Set map[string]string
	// MaxEntries overrides maps' max_entries, by map name.
	MaxEntries map[string]uint32
	// KernelBTF is a BTF file to use as the host's BTF instead of
	// /sys/kernel/btf/vmlinux.
	KernelBTF string
	// BTFCache shares the kernel's parsed BTF across loads (nil: a new
	// one per load). A caller may warm it (BTFCache.Kernel()) while it
	// fetches an artifact: programs attached through BTF (tp_btf, fentry,
	// lsm, ...) and host-BTF relocation need it.
	BTFCache *btf.Cache
	// Mode is how CO-RE relocations are resolved. Default ModeAuto.
	Mode Mode
	// Attach controls attaching.
	Attach AttachOptions
	// Revision is recorded in the state; the artifact's Revision when
	// empty.
	Revision string
}

// AttachOptions tell where programs whose ELF section does not name their
// hook attach.
type AttachOptions struct {
	// Interface is the network interface xdp, tcx and tc programs attach
	// to. Required for those.
	Interface string
	// XDPMode is "" (the kernel's choice), "generic", "native" or
	// "offload".
	XDPMode string
	// TCDirection is the direction of plain "tc" and "classifier"
	// sections: "ingress" (the default) or "egress". tcx/ingress and
	// tcx/egress sections name theirs.
	TCDirection string
	// CgroupPath is the cgroup2 directory cgroup/* and cgroup_skb/*
	// programs attach to. Default DefaultCgroupPath.
	CgroupPath string
	// PerfFreq is the sample frequency of perf_event programs, attached to
	// a cpu-clock event on every online CPU. Default DefaultPerfFreq.
	PerfFreq uint64
	// UprobePID, when not zero, limits uprobes to this process.
	UprobePID int

	// usdt is the set's USDT state (its maps, spec ids), set by the
	// loader while it attaches a set.
	usdt *usdtState
}

// Loaded describes a loaded program set. It is also the JSON state file.
type Loaded struct {
	Name     string    `json:"name"`
	Revision string    `json:"revision"`
	Mode     string    `json:"mode"`
	Since    time.Time `json:"since"`
	// PinDir is the set's pin directory, PinDir/NAME. Maps pin under
	// maps/ by name, with dots made underscores (bpffs refuses dots: the
	// .rodata and .bss maps of globals pin as _rodata and _bss); programs
	// under progs/; links under links/, by program name (perf_event
	// programs have one link per CPU, PROG@cpuN).
	PinDir   string         `json:"pin_dir"`
	Programs []ProgramState `json:"programs"`
	Maps     []MapState     `json:"maps"`
	// BTF holds the types of the maps' keys and values and of the records
	// of ring buffers and perf event arrays, as raw BTF: MapState's type
	// IDs point into it. It travels with the set, so that its maps and
	// records can be decoded (package client/observe) without the
	// artifact.
	BTF []byte `json:"btf,omitempty"`
	// StatsEnabled reports, in Status, whether the sysctl
	// kernel.bpf_stats_enabled is on, so that run counts and times are
	// being collected.
	StatsEnabled bool `json:"stats_enabled,omitempty"`

	// keep holds attachments that could not be pinned and live only as
	// long as this process holds them (see Close).
	keep []io.Closer
}

// ProgramState is one program of a loaded set.
type ProgramState struct {
	Name string `json:"name"`
	// Section is the program's ELF section, e.g. "tp/sched/sched_switch".
	Section string `json:"section"`
	// Type is the program type, as cilium/ebpf names it ("TracePoint").
	Type string `json:"type"`
	ID   uint32 `json:"id"`
	Tag  string `json:"tag"`
	// Attached is set when the program is attached to its hook.
	Attached bool `json:"attached"`
	// AttachPoint describes the hook: "tracepoint
	// sched/sched_process_exec", "xdp lo (generic)", "uprobe
	// /bin/bash:readline", ...
	AttachPoint string `json:"attach_point,omitempty"`
	// LinkID is the ID of the program's (first) link.
	LinkID uint32 `json:"link_id,omitempty"`
	// Links are all the program's links: perf_event programs have one per
	// CPU.
	Links []LinkState `json:"links,omitempty"`
	// Pinned is the program's pin.
	Pinned string `json:"pinned"`
	// RunCount and RunTimeNS are the program's run count and cumulative
	// run time, counted while BPF statistics are enabled.
	RunCount  uint64 `json:"run_count,omitempty"`
	RunTimeNS uint64 `json:"run_time_ns,omitempty"`
	// Error is what is wrong with the program, in Status and Adopt: a pin
	// or link that vanished, or a link that could not be pinned.
	Error string `json:"error,omitempty"`
	// Note explains an unattached program, e.g. a socket filter, which the
	// application attaches to its socket.
	Note string `json:"note,omitempty"`
}

// LinkState is one link of a program.
type LinkState struct {
	ID     uint32 `json:"id"`
	Pinned string `json:"pinned,omitempty"`
}

// MapState is one map of a loaded set.
type MapState struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	ID         uint32 `json:"id"`
	Pinned     string `json:"pinned"`
	MaxEntries uint32 `json:"max_entries"`
	// KeyTypeID and ValueTypeID are the IDs of the key and value types in
	// Loaded.BTF (0: unknown).
	KeyTypeID   uint32 `json:"key_type_id,omitempty"`
	ValueTypeID uint32 `json:"value_type_id,omitempty"`
	// RecordTypeID is the ID in Loaded.BTF of the type of the records of a
	// ring buffer or perf event array (0: unknown, see RecordNote).
	RecordTypeID uint32 `json:"record_type_id,omitempty"`
	// RecordOrigin is "declared" (BPFARM_RECORD) or "inferred" (from the
	// programs' output calls) when RecordTypeID is set.
	RecordOrigin string `json:"record_origin,omitempty"`
	// RecordNote says how the record type was found, or why it was not.
	RecordNote string `json:"record_note,omitempty"`
}

// Close releases the attachments of l that could not be pinned (see
// ProgramState.Error), detaching them. Everything pinned stays loaded and
// attached: use Unload to remove it.
func (l *Loaded) Close() error {
	var errs []error
	for _, c := range l.keep {
		errs = append(errs, c.Close())
	}
	l.keep = nil
	return errors.Join(errs...)
}

// Program returns the state of the program called name, or nil.
func (l *Loaded) Program(name string) *ProgramState {
	for i := range l.Programs {
		if l.Programs[i].Name == name {
			return &l.Programs[i]
		}
	}
	return nil
}

// Map returns the state of the map called name, or nil.
func (l *Loaded) Map(name string) *MapState {
	for i := range l.Maps {
		if l.Maps[i].Name == name {
			return &l.Maps[i]
		}
	}
	return nil
}
