// Package api holds the JSON types of bpfarm's REST API (/api/v1), shared
// by the server and its clients. It has no dependencies on the server and
// needs no cgo.
package api

import (
	"time"

	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/manifest"
)

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

// Build states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
)

// Token roles, from most to least privileged.
const (
	RoleAdmin     = "admin"
	RolePublisher = "publisher"
	RoleReader    = "reader"
	// RoleHost is an agent's token, bound to one host name (bpfarm hosts
	// enroll): it reads what a reader reads and registers, polls, reports
	// and uploads BTF as its own host only.
	RoleHost = "host"
)

// Arches the farm compiles for, named as in the btfhub-archive layout.
var Arches = []string{"x86_64", "arm64"}

// Build is one compile of a revision for one arch.
type Build struct {
	ID          int64               `json:"id"`
	Program     string              `json:"program"`
	Revision    string              `json:"revision"`
	Arch        string              `json:"arch"`
	Kernel      string              `json:"kernel,omitempty"`     // per-kernel build: the kernel compiled against
	HeaderSet   string              `json:"header_set,omitempty"` // libbpf header set; "" is the built-in one
	Flags       []string            `json:"flags"`
	State       string              `json:"state"`
	Error       string              `json:"error,omitempty"`
	ErrorKind   string              `json:"error_kind,omitempty"`
	Diagnostics []bpfsrc.Diagnostic `json:"diagnostics"`
	Object      *Blob               `json:"object,omitempty"`
	Log         *Blob               `json:"log,omitempty"`
	Inspection  *inspect.Object     `json:"inspection,omitempty"`
	Compiler    string              `json:"compiler,omitempty"`
	UsedPCH     bool                `json:"used_pch"`
	Attempts    int                 `json:"attempts"`
	CachedFrom  int64               `json:"cached_from,omitempty"`
	CreatedAt   time.Time           `json:"created_at"`
	StartedAt   *time.Time          `json:"started_at,omitempty"`
	FinishedAt  *time.Time          `json:"finished_at,omitempty"`
	DurationMS  int64               `json:"duration_ms,omitempty"`
}

// Done reports whether the build reached a final state.
func (b *Build) Done() bool { return b.State == StateSucceeded || b.State == StateFailed }

// Blob names a stored blob by digest and size.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Revision is one source bundle of a program.
type Revision struct {
	Digest    string    `json:"digest"`
	Entry     string    `json:"entry"`
	Size      int64     `json:"size"`
	Files     int       `json:"files"`
	PushedBy  string    `json:"pushed_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Builds    []Build   `json:"builds,omitempty"`
}

// Program is a named BPF program source, with its revisions newest first.
type Program struct {
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	Latest    *Revision  `json:"latest,omitempty"`
	Revisions []Revision `json:"revisions,omitempty"`
}

// PushResult is the answer to a push: the revision and one build per arch.
type PushResult struct {
	Program  string  `json:"program"`
	Revision string  `json:"revision"`
	Created  bool    `json:"created"` // false when the revision already existed
	Builds   []Build `json:"builds"`
}

// Token describes an API token; the secret is only ever returned by
// create, in TokenCreated.
type Token struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// Host is the host name a host token is bound to.
	Host string `json:"host,omitempty"`
}

// Quota holds per-token limits; zero fields mean "the server's default"
// in a request and are filled in answers.
type Quota struct {
	// MaxBytes bounds the bytes the token's revisions store: bundles and
	// build outputs.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxRevisions is how many revisions of each program gc keeps.
	MaxRevisions int64 `json:"max_revisions,omitempty"`
	// MaxBuildsPerHour bounds the builds the token's pushes queue per hour.
	MaxBuildsPerHour int64 `json:"max_builds_per_hour,omitempty"`
}

// TokenQuota is a token's effective limits, which of them are overrides,
// and its usage (GET/PUT /api/v1/tokens/{name}/quota).
type TokenQuota struct {
	Token string `json:"token"`
	Quota
	// Overrides holds the limits set for this token (the rest are
	// defaults).
	Overrides Quota `json:"overrides"`
	// BytesUsed and BuildsLastHour are the token's current usage.
	BytesUsed      int64 `json:"bytes_used"`
	BuildsLastHour int64 `json:"builds_last_hour"`
}

// HostEnrollment enrolls a host (POST /api/v1/hosts/{name}/enroll): the
// answer is a token of role host bound to the name.
type HostEnrollment struct {
	// Labels are the host's labels; when set, they override what the
	// agent registers with.
	Labels map[string]string `json:"labels,omitempty"`
}

// GCReport is what a garbage collection removed (or, dry, would remove).
type GCReport struct {
	DryRun    bool  `json:"dry_run"`
	Revisions int   `json:"revisions"` // revisions beyond the kept count
	Builds    int   `json:"builds"`
	Artifacts int   `json:"artifacts"`
	Blobs     int   `json:"blobs"` // blobs no row names
	Bytes     int64 `json:"bytes"` // size of those blobs
}

// TokenRequest creates a token.
type TokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// TokenCreated carries a new token's secret, shown once.
type TokenCreated struct {
	Token
	Secret string `json:"secret"`
}

// Whoami describes the caller's token.
type Whoami struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Anonymous bool   `json:"anonymous"`
	// Host is the host a host token is bound to.
	Host string `json:"host,omitempty"`
}

// SigningKey is the server's ed25519 public key that signs manifests.
type SigningKey struct {
	Algorithm string `json:"algorithm"`  // "ed25519"
	PublicKey string `json:"public_key"` // base64 (standard) of the 32-byte key
	PEM       string `json:"pem"`        // PKIX "PUBLIC KEY" PEM
	KeyID     string `json:"key_id"`     // hex sha256 of the raw key, first 16 chars
}

// Artifact states (an artifact is also a relocation job).
const (
	ArtifactQueued  = "queued"
	ArtifactRunning = "running"
	ArtifactDone    = "done"
	ArtifactError   = "error"
)

// Artifact is a build relocated for one kernel.
type Artifact struct {
	ID         int64            `json:"id"`
	Program    string           `json:"program"`
	Revision   string           `json:"revision"`
	BuildID    int64            `json:"build_id"`
	Arch       string           `json:"arch"`
	Kernel     string           `json:"kernel"`
	PerKernel  bool             `json:"per_kernel,omitempty"`
	State      string           `json:"state"`
	Status     string           `json:"status,omitempty"` // ok, poisoned, unsupported, failed (when done)
	Error      string           `json:"error,omitempty"`
	Report     *manifest.Report `json:"report,omitempty"`
	Object     *Blob            `json:"object,omitempty"`
	MinBTF     *Blob            `json:"min_btf,omitempty"`
	Relocated  *Blob            `json:"relocated,omitempty"`
	Manifest   *Blob            `json:"manifest,omitempty"`
	CreatedAt  time.Time        `json:"created_at"`
	FinishedAt *time.Time       `json:"finished_at,omitempty"`
	// Verification is the artifact's verification on its real kernel,
	// when the kernel has an image (see Verification).
	Verification *Verification `json:"verification,omitempty"`
}

// Kernel trust levels.
const (
	KernelTrusted    = "trusted"
	KernelUnverified = "unverified"
)

// Kernel is a kernel of the BTF archive.
type Kernel struct {
	ID          string `json:"id"` // DISTRO/VERSION/ARCH/RELEASE
	Distro      string `json:"distro"`
	Version     string `json:"version"`
	Arch        string `json:"arch"`
	Release     string `json:"release"`
	Build       string `json:"build,omitempty"`
	VersionCode uint32 `json:"version_code,omitempty"`
	BTF         Blob   `json:"btf"`
	Modules     int    `json:"modules"`
	ModulesSize int64  `json:"modules_size,omitempty"`
	HasConfig   bool   `json:"has_config"`
	HasImage    bool   `json:"has_image"`
	Source      string `json:"source"`
	// Trust is "trusted", or "unverified" for BTF a host uploaded: never a
	// reference kernel, and its artifacts are served only to SourceHost
	// until an admin approves it (bpfarm kernels approve).
	Trust      string    `json:"trust"`
	SourceHost string    `json:"source_host,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	Default    bool      `json:"default,omitempty"` // the arch's reference kernel for compiles
	Artifacts  int       `json:"artifacts"`
}

// KernelImport is the answer to a kernel import.
type KernelImport struct {
	Kernels []KernelImported `json:"kernels"`
	// Refused lists the files of a btfhub-archive tree import that were
	// not imported, each with why (`bpfarm kernels import DIR --json`).
	Refused []KernelRefused `json:"refused,omitempty"`
}

// ReferenceKernel is an arch's reference kernel for CO-RE compiles: the
// kernel whose vmlinux.h every compile for that arch uses.
type ReferenceKernel struct {
	Arch string `json:"arch"`
	// Kernel is the kernel's id; empty while the archive holds no kernel
	// of that arch (compiles then use this server's own BTF).
	Kernel string `json:"kernel,omitempty"`
	// Pinned is set when an admin pinned it (or the server's
	// --default-kernel names it); otherwise it is the arch's newest kernel
	// by release, and changes when a newer one arrives.
	Pinned bool `json:"pinned"`
}

// ReferencePin pins a kernel as its arch's reference kernel.
type ReferencePin struct {
	Kernel string `json:"kernel"`
}

// KernelRefused is a file a kernel import refused.
type KernelRefused struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// KernelImported is one imported kernel.
type KernelImported struct {
	Kernel  Kernel `json:"kernel"`
	Created bool   `json:"created"` // false when the same BTF was already there
	Queued  int    `json:"queued"`  // relocations queued for it
}

// Resolved answers an artifact resolve: the signed manifest and where to
// fetch each file.
type Resolved struct {
	// Revision is the revision the server chose: the one asked for, or
	// the newest with an artifact for the kernel.
	Revision string `json:"revision"`
	// Kernel is the archive kernel id the server chose for the kernel
	// asked for (see Match).
	Kernel   string             `json:"kernel"`
	Artifact Artifact           `json:"artifact"`
	Manifest *manifest.Manifest `json:"manifest"`
	// Match says how the kernel was matched: "exact" or "release" (the
	// same release and arch under another distro entry).
	Match string `json:"match"`
}

// Per-program states an agent reports for a host.
const (
	// HostProgramLoaded: the desired revision is loaded and attached.
	HostProgramLoaded = "loaded"
	// HostProgramFailed: the desired revision could not be fetched or
	// loaded and nothing of the program runs.
	HostProgramFailed = "failed"
	// HostProgramRolledBack: the desired revision was refused (fetch,
	// verification, verifier or attach failure) and the last good one
	// keeps running.
	HostProgramRolledBack = "rolled_back"
	// HostProgramPending: the desired revision is not applied yet (no
	// artifact for the host's kernel so far, or the server is unreachable).
	HostProgramPending = "pending"
)

// HostRegistration is what an agent sends when it registers its host
// (POST /api/v1/hosts/register, idempotent by name).
type HostRegistration struct {
	Name         string            `json:"name"`
	HostID       string            `json:"host_id,omitempty"` // machine-id, or an id the agent generated and keeps
	Hostname     string            `json:"hostname,omitempty"`
	Kernel       string            `json:"kernel"`          // DISTRO/VERSION/ARCH/RELEASE (kernel.Host)
	Build        string            `json:"build,omitempty"` // uname -v
	Labels       map[string]string `json:"labels,omitempty"`
	HasBTF       bool              `json:"has_btf"`
	AgentVersion string            `json:"agent_version,omitempty"`
}

// HostProgram is the state an agent reports for one program.
type HostProgram struct {
	Program string `json:"program"`
	// Revision is the revision running on the host ("" when none).
	Revision string `json:"revision,omitempty"`
	// Desired is the revision the host should run, when it differs.
	Desired string `json:"desired,omitempty"`
	// State is loaded, failed, rolled_back or pending.
	State string    `json:"state"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
	// Exports says how each map the assignment exports is exported, or
	// why it cannot be.
	Exports []ExportStatus `json:"exports,omitempty"`
}

// HostReport is an agent's report of its programs (POST
// /api/v1/hosts/{name}/report); it replaces the previous report.
type HostReport struct {
	Programs []HostProgram `json:"programs"`
}

// Host is a registered host.
type Host struct {
	ID           int64             `json:"id"`
	Name         string            `json:"name"`
	HostID       string            `json:"host_id,omitempty"`
	Hostname     string            `json:"hostname,omitempty"`
	Kernel       string            `json:"kernel"`
	Build        string            `json:"build,omitempty"`
	Labels       map[string]string `json:"labels"`
	HasBTF       bool              `json:"has_btf"`
	AgentVersion string            `json:"agent_version,omitempty"`
	FirstSeen    time.Time         `json:"first_seen"`
	LastSeen     time.Time         `json:"last_seen"`
	// ReportedAt is when the agent last reported its programs.
	ReportedAt *time.Time    `json:"reported_at,omitempty"`
	Programs   []HostProgram `json:"programs"`
	// ArchiveKernel is the archive's kernel the host's artifacts are
	// relocated for (its own id, or the same release under another
	// distro entry); empty when the archive has no such kernel.
	ArchiveKernel string `json:"archive_kernel,omitempty"`
	// Token names the token the host registered with; Enrolled names the
	// host's live host token ("" when the host was never enrolled or its
	// token was revoked).
	Token    string `json:"token,omitempty"`
	Enrolled string `json:"enrolled,omitempty"`
}

// AttachOptions say where an agent attaches programs that need a target.
type AttachOptions struct {
	Interface string `json:"interface,omitempty"` // xdp, tc, tcx
	XDPMode   string `json:"xdp_mode,omitempty"`  // generic, native, offload
	// TCDirection is the direction of plain tc programs: ingress (default)
	// or egress.
	TCDirection string `json:"tc_direction,omitempty"`
	CgroupPath  string `json:"cgroup_path,omitempty"` // cgroup programs
	PerfFreq    uint64 `json:"perf_freq,omitempty"`   // perf_event programs
	UprobePID   int    `json:"uprobe_pid,omitempty"`  // uprobes: only this process
}

// LoadOptions are how an agent loads an assigned program.
type LoadOptions struct {
	// Programs loads only these programs of the object (all when empty).
	Programs []string `json:"programs,omitempty"`
	// Set rewrites const volatile globals before load: VAR → value.
	Set map[string]string `json:"set,omitempty"`
	// MaxEntries overrides maps' max_entries: MAP → n.
	MaxEntries map[string]uint32 `json:"max_entries,omitempty"`
	// NoAttach loads and pins without attaching.
	NoAttach bool          `json:"no_attach,omitempty"`
	Attach   AttachOptions `json:"attach,omitempty"`
}

// AssignmentRequest assigns a program to the hosts its selector matches
// (POST /api/v1/assignments).
type AssignmentRequest struct {
	Program string `json:"program"`
	// Selector holds label pairs a host must all have; empty: every host.
	Selector map[string]string `json:"selector,omitempty"`
	// Revision pins a revision (digest or unique prefix); empty: the
	// latest revision with an artifact for each host's kernel.
	Revision string      `json:"revision,omitempty"`
	Options  LoadOptions `json:"options"`
	// Exports names maps the hosts export as Prometheus metrics.
	Exports []Export `json:"exports,omitempty"`
}

// Assignment assigns a program to the hosts its selector matches.
type Assignment struct {
	ID        int64             `json:"id"`
	Program   string            `json:"program"`
	Selector  map[string]string `json:"selector"`
	Revision  string            `json:"revision,omitempty"` // full digest when pinned
	Options   LoadOptions       `json:"options"`
	Exports   []Export          `json:"exports"`
	CreatedBy string            `json:"created_by,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
}

// DesiredProgram is one program a host should run.
type DesiredProgram struct {
	Program string `json:"program"`
	// Revision is the revision to run: the assignment's pinned one, or the
	// program's latest revision with a done artifact for the host's
	// kernel. Empty when there is none yet (see Pending): the host keeps
	// what it runs.
	Revision string `json:"revision,omitempty"`
	// Pinned: the assignment names Revision. An agent refuses a revision
	// older than the newest it has loaded unless it is pinned.
	Pinned bool `json:"pinned,omitempty"`
	// Kernel is the archive kernel id to fetch the artifact for.
	Kernel     string      `json:"kernel,omitempty"`
	ArtifactID int64       `json:"artifact_id,omitempty"`
	Assignment int64       `json:"assignment"`
	Options    LoadOptions `json:"options"`
	// Exports are the maps to export as Prometheus metrics.
	Exports []Export `json:"exports,omitempty"`
	// Pending says why there is no revision to run yet.
	Pending string `json:"pending,omitempty"`
}

// DesiredState is what a host should run
// (GET /api/v1/hosts/{name}/desired). Version changes whenever the
// content does: a client passes it back (?version=N) to long-poll for the
// next change.
type DesiredState struct {
	Host     string           `json:"host"`
	Version  uint64           `json:"version"`
	Programs []DesiredProgram `json:"programs"`
}

// Verification results (Verification.Result).
const (
	// VerificationVerified: the kernel accepted every program in every
	// mode.
	VerificationVerified = "verified"
	// VerificationRejected: the kernel refused at least one program.
	VerificationRejected = "rejected"
	// VerificationKernelError: the VM stopped without results: a kernel
	// panic, no /init, garbage on the console.
	VerificationKernelError = "kernel-error"
	// VerificationTimeout: the VM did not finish within its timeout.
	VerificationTimeout = "timeout"
	// VerificationRunnerError: the verifier started in the VM but could
	// not do its job (another kernel booted, an unreadable object...).
	VerificationRunnerError = "runner-error"
	// VerificationSkipped: the server cannot boot this kernel (no qemu for
	// its arch); Reason says what to install.
	VerificationSkipped = "skipped"
)

// ProgramVerification is one program's verdict on a real kernel in one
// load mode.
type ProgramVerification struct {
	Program string `json:"program"`
	Section string `json:"section,omitempty"`
	Type    string `json:"type,omitempty"`
	// Mode is how it was loaded: "relocated" (the pre-relocated object) or
	// "host-btf" (the CO-RE object against the kernel's own BTF).
	Mode     string `json:"mode"`
	Accepted bool   `json:"accepted"`
	// Verifier is set when a rejection came from the kernel's verifier
	// (with a log) rather than an earlier step of the load.
	Verifier bool `json:"verifier,omitempty"`
	// Instructions is how many instructions the verifier processed.
	Instructions int `json:"instructions,omitempty"`
	// LoadMS is the load's wall time in the VM (emulated without KVM).
	LoadMS float64 `json:"load_ms"`
	// Error is the verifier's complaint; Log the tail of its log.
	Error string   `json:"error,omitempty"`
	Log   []string `json:"log,omitempty"`
}

// Verification is an artifact verified on its real kernel: the kernel's
// image booted in a VM, where every program of the artifact was loaded,
// load-only, with the agent's loader.
type Verification struct {
	ID         int64  `json:"id"`
	ArtifactID int64  `json:"artifact_id"`
	Program    string `json:"program"`
	Revision   string `json:"revision"`
	BuildID    int64  `json:"build_id"`
	Arch       string `json:"arch"`
	Kernel     string `json:"kernel"`
	// State is queued, running, done or error (the server could not run
	// it; see Reason).
	State string `json:"state"`
	// Result is verified, rejected, kernel-error, timeout, runner-error or
	// skipped, when done.
	Result string `json:"result,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Programs holds each program's verdict per mode.
	Programs []ProgramVerification `json:"programs"`
	// Release is the kernel release the VM booted (uname -r).
	Release string `json:"release,omitempty"`
	// Accel is the VM's accelerator: kvm or tcg.
	Accel string `json:"accel,omitempty"`
	// Console is the tail of the VM's console; ConsoleLog the whole
	// console (first MiB and last 64 KiB) as a blob.
	Console    string `json:"console,omitempty"`
	ConsoleLog *Blob  `json:"console_log,omitempty"`
	// BootMS is the wall time from starting the VM to the verifier's first
	// answer; DurationMS the VM's whole wall time.
	BootMS     int64      `json:"boot_ms,omitempty"`
	DurationMS int64      `json:"duration_ms,omitempty"`
	Attempts   int        `json:"attempts"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Accepted counts the programs accepted in every mode, out of all.
func (v *Verification) Accepted() (accepted, total int) {
	ok := map[string]bool{}
	var order []string
	for _, p := range v.Programs {
		prev, seen := ok[p.Program]
		if !seen {
			order = append(order, p.Program)
			prev = true
		}
		ok[p.Program] = prev && p.Accepted
	}
	for _, name := range order {
		if ok[name] {
			accepted++
		}
	}
	return accepted, len(order)
}

// HeaderSet is a libbpf header set builds compile with: the farm's
// built-in one (the host's libbpf-dev) or one an admin imported.
type HeaderSet struct {
	Name string `json:"name"`
	// Digest is the SHA-256 of the headers in canonical form.
	Digest string `json:"digest"`
	// Version is libbpf's MAJOR.MINOR from libbpf_version.h, if present.
	Version    string    `json:"version,omitempty"`
	Files      int       `json:"files"`
	Size       int64     `json:"size"`
	Builtin    bool      `json:"builtin,omitempty"`
	Default    bool      `json:"default,omitempty"` // what a push without --headers uses
	ImportedBy string    `json:"imported_by,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
}

// HeaderSetImport is the answer to a header set import.
type HeaderSetImport struct {
	HeaderSet
	// Created is false when the same set was already imported.
	Created bool `json:"created"`
}
