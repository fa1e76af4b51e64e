package client

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/internal/fsutil"
	"github.com/bpfarm/bpfarm/manifest"
)

// Request is what an agent asked the server for, and what the server's
// resolve answer says it chose. CheckArtifact holds a manifest to it.
type Request struct {
	// Program is the program asked for.
	Program string
	// Revision is the revision asked for (a digest or a prefix of one);
	// empty asks for the newest.
	Revision string
	// Kernel is the kernel id asked for.
	Kernel string
	// Host, when set, is the kernel id of the host that loads the
	// artifact: an artifact for another arch or release is refused even if
	// the kernel asked for (say, a desired state's) named one.
	Host string
	// ResolvedRevision, ResolvedKernel and Match are the resolve answer's
	// choice (empty for a manifest from the cache).
	ResolvedRevision, ResolvedKernel, Match string
	// Newest is the newest revision of Program loaded on this host (zero:
	// none yet; see RecordLoaded).
	Newest LoadedRevision
	// AllowOlder lets a revision older than Newest through: it was asked
	// for explicitly (`--revision`, a pinned assignment).
	AllowOlder bool
}

// LoadedRevision is the newest revision of a program an agent has loaded,
// kept in its cache directory (see RecordLoaded).
type LoadedRevision struct {
	Revision string `json:"revision"`
	// BuildID orders revisions: the server numbers builds in the order
	// they are created, and a newer revision's build comes later.
	BuildID  int64     `json:"build_id"`
	Kernel   string    `json:"kernel"`
	LoadedAt time.Time `json:"loaded_at"`
}

// CheckArtifact is the check every agent path (the Go library's
// FetchArtifact, `bpfarm-agent load` and the daemon) applies to a manifest
// before anything of its artifact is loaded:
//
//   - its ed25519 signature verifies against the pinned key pub (else
//     ErrSignature), so that every field below is the server's word;
//   - it is for the program asked for, for the revision asked for (or the
//     one the server said it chose), for the arch of the kernel asked for,
//     and for the kernel asked for: the same id, or (a release match) the
//     same release and arch under another distro entry — and it is the
//     kernel the server said it chose;
//   - its revision is not older than the newest of the program loaded on
//     this host, unless req.AllowOlder.
//
// A manifest that fails one of the last two is a *WrongArtifactError naming
// what was asked for and what came back. The files are checked against the
// manifest separately (manifest.VerifyFile).
func CheckArtifact(pub ed25519.PublicKey, req Request, m *manifest.Manifest) error {
	if m == nil {
		return errors.New("no manifest")
	}
	if len(pub) != ed25519.PublicKeySize {
		return ErrNoPublicKey
	}
	if err := m.Verify(pub); err != nil {
		return fmt.Errorf("artifact of %s: %w", req.Program, err)
	}
	wrong := func(what, asked, got string) error {
		return &WrongArtifactError{Program: req.Program, What: what, Asked: asked, Got: got}
	}
	if m.Program != req.Program {
		return wrong("program", req.Program, m.Program)
	}
	if req.Revision != "" && !strings.HasPrefix(m.Revision, strings.ToLower(req.Revision)) {
		return wrong("revision", req.Revision, m.Revision)
	}
	if req.ResolvedRevision != "" && m.Revision != req.ResolvedRevision {
		return wrong("revision", req.ResolvedRevision, m.Revision)
	}
	asked, askedErr := kernel.ParseID(req.Kernel)
	got, gotErr := kernel.ParseID(m.Kernel)
	if askedErr == nil && m.Arch != asked.Arch {
		return wrong("arch", asked.Arch, m.Arch)
	}
	switch {
	case askedErr != nil || gotErr != nil:
		if m.Kernel != req.Kernel {
			return wrong("kernel", req.Kernel, m.Kernel)
		}
	case got != asked && (req.Match == "exact" || got.Arch != asked.Arch || got.Release != asked.Release):
		return wrong("kernel", req.Kernel, m.Kernel)
	}
	if req.ResolvedKernel != "" && m.Kernel != req.ResolvedKernel {
		return wrong("kernel", req.ResolvedKernel, m.Kernel)
	}
	if req.Host != "" {
		host, err := kernel.ParseID(req.Host)
		if err != nil {
			return fmt.Errorf("host kernel: %w", err)
		}
		if m.Arch != host.Arch {
			return wrong("arch", host.Arch, m.Arch)
		}
		if gotErr != nil || got.Release != host.Release {
			return wrong("kernel", req.Host, m.Kernel)
		}
	}
	if n := req.Newest; n.Revision != "" && m.Revision != n.Revision && m.BuildID < n.BuildID && !req.AllowOlder {
		return &WrongArtifactError{Program: req.Program, What: "revision", Asked: n.Revision, Got: m.Revision, Older: true}
	}
	return nil
}

// loadedPath is where RecordLoaded keeps a program's newest revision.
func loadedPath(cacheDir, program string) string {
	return filepath.Join(cacheDir, "loaded", url.PathEscape(program)+".json")
}

// NewestLoaded returns the newest revision of program recorded in cacheDir
// (zero when none).
func NewestLoaded(cacheDir, program string) (LoadedRevision, error) {
	var lr LoadedRevision
	if cacheDir == "" {
		return lr, nil
	}
	b, err := os.ReadFile(loadedPath(cacheDir, program))
	if errors.Is(err, fs.ErrNotExist) {
		return lr, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &lr)
	}
	if err != nil {
		return LoadedRevision{}, fmt.Errorf("newest loaded revision of %s: %w", program, err)
	}
	return lr, nil
}

// RecordLoaded records in cacheDir that the artifact of m was loaded on
// this host: from then on, FetchArtifact with that cache directory refuses
// an older revision of the program unless it is asked for explicitly. It
// only ever raises the record. Call it once the artifact loaded.
func RecordLoaded(cacheDir string, m *manifest.Manifest) error {
	if cacheDir == "" {
		return nil
	}
	cur, err := NewestLoaded(cacheDir, m.Program)
	if err == nil && cur.Revision != "" && m.BuildID < cur.BuildID {
		return nil
	}
	b, _ := json.MarshalIndent(LoadedRevision{Revision: m.Revision, BuildID: m.BuildID, Kernel: m.Kernel,
		LoadedAt: time.Now().UTC()}, "", "  ")
	if err := fsutil.WriteFileAtomic(loadedPath(cacheDir, m.Program), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("record the loaded revision of %s: %w", m.Program, err)
	}
	return nil
}

// WrongArtifactError is a validly signed artifact that is not the one
// asked for: another program, revision, kernel or arch than the request
// and the server's resolve answer name, or (Older) a revision older than
// the newest this host has loaded of the program. It matches
// ErrWrongArtifact.
type WrongArtifactError struct {
	// Program is the program asked for.
	Program string
	// What differs: "program", "revision", "kernel" or "arch".
	What string
	// Asked is what was asked for (or resolved), Got what the signed
	// manifest names.
	Asked, Got string
	// Older: Got is a revision older than Asked, the newest loaded here.
	Older bool
}

func (e *WrongArtifactError) Error() string {
	if e.Older {
		return fmt.Sprintf("artifact of %s refused: revision %s is older than revision %s, the newest loaded on this host "+
			"(ask for it by revision to go back)", e.Program, short(e.Got), short(e.Asked))
	}
	asked, got := e.Asked, e.Got
	if e.What == "revision" {
		asked, got = short(asked), short(got)
	}
	return fmt.Sprintf("artifact of %s refused: asked for %s %s, the signed manifest is for %s %s", e.Program, e.What,
		asked, e.What, got)
}

// Is makes errors.Is(err, ErrWrongArtifact) hold.
func (e *WrongArtifactError) Is(target error) bool { return target == ErrWrongArtifact }

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
