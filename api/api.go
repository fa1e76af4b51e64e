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
)

// Arches the farm compiles for, named as in the btfhub-archive layout.
var Arches = []string{"x86_64", "arm64"}

// Build is one compile of a revision for one arch.
type Build struct {
	ID          int64               `json:"id"`
	Program     string              `json:"program"`
	Revision    string              `json:"revision"`
	Arch        string              `json:"arch"`
	Kernel      string              `json:"kernel,omitempty"` // per-kernel build: the kernel compiled against
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
	Status     string           `json:"status,omitempty"` // ok, poisoned, failed (when done)
	Error      string           `json:"error,omitempty"`
	Report     *manifest.Report `json:"report,omitempty"`
	Object     *Blob            `json:"object,omitempty"`
	MinBTF     *Blob            `json:"min_btf,omitempty"`
	Relocated  *Blob            `json:"relocated,omitempty"`
	Manifest   *Blob            `json:"manifest,omitempty"`
	CreatedAt  time.Time        `json:"created_at"`
	FinishedAt *time.Time       `json:"finished_at,omitempty"`
}

// Kernel is a kernel of the BTF archive.
type Kernel struct {
	ID          string    `json:"id"` // DISTRO/VERSION/ARCH/RELEASE
	Distro      string    `json:"distro"`
	Version     string    `json:"version"`
	Arch        string    `json:"arch"`
	Release     string    `json:"release"`
	Build       string    `json:"build,omitempty"`
	VersionCode uint32    `json:"version_code,omitempty"`
	BTF         Blob      `json:"btf"`
	Modules     int       `json:"modules"`
	ModulesSize int64     `json:"modules_size,omitempty"`
	HasConfig   bool      `json:"has_config"`
	HasImage    bool      `json:"has_image"`
	Source      string    `json:"source"`
	CreatedAt   time.Time `json:"created_at"`
	Default     bool      `json:"default,omitempty"` // the arch's reference kernel for compiles
	Artifacts   int       `json:"artifacts"`
}

// KernelImport is the answer to a kernel import.
type KernelImport struct {
	Kernels []KernelImported `json:"kernels"`
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
	Artifact Artifact           `json:"artifact"`
	Manifest *manifest.Manifest `json:"manifest"`
	// Match says how the kernel was matched: "exact" or "release".
	Match string `json:"match"`
}
