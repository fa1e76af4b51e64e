// Package archive is the server's BTF archive: it stores imported kernels
// (raw BTF, modules' split BTF, config and image as blobs; identity in
// SQLite), keeps recently used kernels parsed, and generates vmlinux.h per
// BTF digest for compiles.
package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/core"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/failpoint"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
)

// MaxBTFSize bounds a kernel's BTF (vmlinux or all modules) read back from
// the blob store.
const MaxBTFSize = 512 << 20

// Archive is the BTF archive.
type Archive struct {
	db    *store.DB
	blobs blob.Store
	log   *slog.Logger
	dir   string // vmlinux.h cache
	// queued wakes the workers of jobs an import queued (Config.Queued).
	queued func()

	// Defaults names each arch's reference kernel for CO-RE compiles; an
	// arch without one uses its newest kernel.
	defaults map[string]string

	mu     sync.Mutex
	parsed map[string]*parsedEntry // by BTF digest + modules digest
	order  []string                // LRU, most recent last
	limit  int
	group  singleflight.Group
}

type parsedEntry struct {
	k *core.Kernel
}

// Config configures an Archive.
type Config struct {
	DB    *store.DB
	Blobs blob.Store
	Log   *slog.Logger
	// CacheDir holds generated vmlinux.h files.
	CacheDir string
	// Defaults maps an arch to its reference kernel id.
	Defaults map[string]string
	// ParsedKernels bounds how many parsed kernels stay in memory (default 8).
	ParsedKernels int
	// Queued, when set, is called after an import queued jobs (the
	// relocations and verifications a kernel implies, committed with it):
	// it wakes their workers.
	Queued func()
}

// New returns an Archive.
func New(cfg Config) (*Archive, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ParsedKernels <= 0 {
		cfg.ParsedKernels = 8
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o750); err != nil {
		return nil, fmt.Errorf("archive cache: %w", err)
	}
	for arch, kid := range cfg.Defaults {
		id, err := kernel.ParseID(kid)
		if err != nil {
			return nil, fmt.Errorf("default kernel for %s: %w", arch, err)
		}
		if id.Arch != arch {
			return nil, fmt.Errorf("default kernel for %s: %s is a %s kernel", arch, kid, id.Arch)
		}
	}
	return &Archive{db: cfg.DB, blobs: cfg.Blobs, log: cfg.Log, dir: cfg.CacheDir, defaults: cfg.Defaults,
		queued: cfg.Queued, parsed: map[string]*parsedEntry{}, limit: cfg.ParsedKernels}, nil
}

// ImportOptions qualify an import.
type ImportOptions struct {
	// ID overrides or completes the identity the source gives.
	ID kernel.ID
	// Replace lets another BTF replace an existing kernel id.
	Replace bool
	// By names who imported it.
	By string
	// SourceHost, when set, names the host whose token uploaded the
	// kernel: it is stored unverified (api.KernelUnverified).
	SourceHost string
}

// Imported is one stored kernel.
type Imported struct {
	Kernel  store.Kernel
	Created bool
	// Queued counts the relocations queued for the kernel.
	Queued int
}

// Store stores one kernel read by package source.
func (a *Archive) Store(ctx context.Context, k *source.Kernel, opt ImportOptions) (Imported, error) {
	id := completeID(k.ID, opt.ID).Canonical()
	if err := id.Validate(); err != nil {
		return Imported{}, &InputError{fmt.Errorf("kernel from %s: %w (name it with --id DISTRO/VERSION/ARCH/RELEASE)", k.Source, err)}
	}
	if len(k.BTF) == 0 {
		return Imported{}, &InputError{fmt.Errorf("kernel %s from %s: no BTF", id, k.Source)}
	}
	row := store.Kernel{KID: id.String(), Distro: id.Distro, Version: id.Version, Arch: id.Arch, Release: id.Release,
		Build: k.Build, Source: k.Source, ImportedBy: opt.By, BTFSize: int64(len(k.BTF)), Trust: api.KernelTrusted}
	if opt.SourceHost != "" {
		row.Trust, row.SourceHost = api.KernelUnverified, opt.SourceHost
	}
	if k.Banner != nil {
		row.VersionCode = k.Banner.VersionCode()
	} else if r, err := kernel.ParseRelease(id.Release); err == nil {
		row.VersionCode = kernel.VersionCode(r.Major, r.Minor, r.Patch)
	}
	d, err := blob.PutBytes(ctx, a.blobs, k.BTF)
	if err != nil {
		return Imported{}, fmt.Errorf("store BTF of %s: %w", id, err)
	}
	row.BTFBlob = d.String()
	if len(k.Modules) > 0 {
		mods, size, err := packModules(k.Modules)
		if err != nil {
			return Imported{}, err
		}
		if d, err = blob.PutBytes(ctx, a.blobs, mods); err != nil {
			return Imported{}, fmt.Errorf("store module BTF of %s: %w", id, err)
		}
		row.ModulesBlob, row.ModulesCount, row.ModulesSize = d.String(), len(k.Modules), size
	}
	if len(k.Config) > 0 {
		if d, err = blob.PutBytes(ctx, a.blobs, k.Config); err != nil {
			return Imported{}, fmt.Errorf("store config of %s: %w", id, err)
		}
		row.ConfigBlob = d.String()
	}
	if k.Image != "" {
		f, err := os.Open(k.Image)
		if err != nil {
			return Imported{}, fmt.Errorf("kernel image of %s: %w", id, err)
		}
		info, err := a.blobs.Put(ctx, f, -1, blob.Digest{})
		f.Close()
		if err != nil {
			return Imported{}, fmt.Errorf("store kernel image of %s: %w", id, err)
		}
		row.ImageBlob, row.ImageSize = info.Digest.String(), info.Size
	}
	failpoint.Hit("kernel/before-put")
	out, created, queued, err := a.db.PutKernel(ctx, row, opt.Replace)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Imported{}, &InputError{err}
		}
		return Imported{}, err
	}
	failpoint.Hit("kernel/stored")
	if a.queued != nil {
		a.queued()
	}
	a.log.Info("kernel imported", "kernel", out.KID, "created", created, "btf_bytes", out.BTFSize,
		"modules", out.ModulesCount, "source", out.Source, "relocations_queued", queued)
	return Imported{Kernel: out, Created: created, Queued: queued}, nil
}

// InputError is an import refused for its input (a 4xx).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// completeID fills the source's identity with the caller's: a field of
// override (--id) wins where set, over any name inside the file.
func completeID(fromSource, override kernel.ID) kernel.ID {
	id := fromSource
	if override.Distro != "" {
		id.Distro = override.Distro
	}
	if override.Version != "" {
		id.Version = override.Version
	}
	if override.Arch != "" {
		id.Arch = override.Arch
	}
	if override.Release != "" {
		id.Release = override.Release
	}
	return id
}

// packModules writes modules' split BTF as a deterministic tar.gz with one
// NAME.btf entry per module, sorted by name.
func packModules(mods []source.Module) ([]byte, int64, error) {
	sorted := append([]source.Module(nil), mods...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	var size int64
	for _, m := range sorted {
		if err := tw.WriteHeader(&tar.Header{Name: m.Name + ".btf", Mode: 0o644, Size: int64(len(m.BTF)), Format: tar.FormatPAX}); err != nil {
			return nil, 0, fmt.Errorf("pack module BTF %s: %w", m.Name, err)
		}
		tw.Write(m.BTF)
		size += int64(len(m.BTF))
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	if err := gz.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), size, nil
}

// unpackModules reverses packModules.
func unpackModules(b []byte) (map[string][]byte, error) {
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("module BTF: %w", err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("module BTF: %w", err)
		}
		if h.Size < 0 || h.Size > MaxBTFSize {
			return nil, fmt.Errorf("module BTF %s: %d bytes", h.Name, h.Size)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			return nil, fmt.Errorf("module BTF %s: %w", h.Name, err)
		}
		out[strings.TrimSuffix(h.Name, ".btf")] = data
	}
}

// Parsed returns the kernel's parsed BTF, from memory when recently used.
// Kernels sharing a BTF (the same kernel under several ids) share one
// parse.
func (a *Archive) Parsed(ctx context.Context, k store.Kernel) (*core.Kernel, error) {
	key := k.BTFBlob + "+" + k.ModulesBlob
	a.mu.Lock()
	if e, ok := a.parsed[key]; ok {
		a.touch(key)
		a.mu.Unlock()
		return e.k, nil
	}
	a.mu.Unlock()
	v, err, _ := a.group.Do(key, func() (any, error) {
		vmlinux, err := a.readBlob(ctx, k.BTFBlob, k.BTFSize)
		if err != nil {
			return nil, fmt.Errorf("BTF of %s: %w", k.KID, err)
		}
		// Module BTF (about a thousand gzipped modules per kernel) is only
		// read, unpacked and parsed when a relocation needs a type vmlinux
		// lacks, as libbpf does: most builds never need it.
		var mods func() (map[string][]byte, error)
		if k.ModulesBlob != "" {
			bg := context.WithoutCancel(ctx)
			mods = func() (map[string][]byte, error) {
				packed, err := a.readBlob(bg, k.ModulesBlob, -1)
				if err != nil {
					return nil, fmt.Errorf("module BTF of %s: %w", k.KID, err)
				}
				return unpackModules(packed)
			}
		}
		pk, err := core.LoadKernelLazy(k.KID, vmlinux, mods)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		a.parsed[key] = &parsedEntry{k: pk}
		a.touch(key)
		for len(a.order) > a.limit {
			delete(a.parsed, a.order[0])
			a.order = a.order[1:]
		}
		a.mu.Unlock()
		return pk, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*core.Kernel), nil
}

// touch marks key most recently used; a.mu is held.
func (a *Archive) touch(key string) {
	for i, k := range a.order {
		if k == key {
			a.order = append(a.order[:i], a.order[i+1:]...)
			break
		}
	}
	a.order = append(a.order, key)
}

func (a *Archive) readBlob(ctx context.Context, digest string, size int64) ([]byte, error) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		if info, err := a.blobs.Stat(ctx, d); err == nil {
			size = info.Size
		}
	}
	// Read into a buffer of the right size: growing one to a kernel's
	// BTF (megabytes, once per kernel of a fan-out) costs more than the
	// parse's own allocations.
	return blob.ReadAllSized(ctx, a.blobs, d, MaxBTFSize, size)
}

// Default returns the arch's reference kernel for CO-RE compiles, whose
// vmlinux.h every compile for that arch uses: the one configured with
// --default-kernel, else the one an admin pinned (PinReference), else the
// newest release of that arch in the archive (kernel.CompareRelease) among
// the kernels that may be a reference (see referenceCandidate). So it
// changes when a newer kernel arrives, whatever the order of imports; the
// build cache key covers the vmlinux.h digest (compile.Fingerprint), so a
// push after the change compiles again. It returns store.ErrNotFound when
// the archive holds no such kernel of that arch.
func (a *Archive) Default(ctx context.Context, arch string) (store.Kernel, error) {
	if kid, ok := a.defaults[arch]; ok {
		k, err := a.db.Kernel(ctx, kid)
		if err == nil && k.Unverified() {
			return store.Kernel{}, fmt.Errorf("reference kernel %s is unverified (uploaded by host %s): approve it first",
				kid, k.SourceHost)
		}
		return k, err
	}
	if k, err := a.db.PinnedReference(ctx, arch); err == nil && referenceCandidate(k) {
		return k, nil
	} else if err == nil {
		return store.Kernel{}, fmt.Errorf("pinned reference kernel %s is unverified (uploaded by host %s): approve it or unpin it", k.KID, k.SourceHost)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Kernel{}, err
	}
	ks, err := a.db.Kernels(ctx, arch)
	if err != nil {
		return store.Kernel{}, err
	}
	var best *store.Kernel
	for i, k := range ks {
		if !referenceCandidate(k) {
			continue
		}
		if best == nil || kernel.CompareRelease(k.Release, best.Release) > 0 {
			best = &ks[i]
		}
	}
	if best == nil {
		return store.Kernel{}, fmt.Errorf("no trusted %s kernel in the archive: %w", arch, store.ErrNotFound)
	}
	return *best, nil
}

// referenceCandidate reports whether kernel k may be its arch's reference
// kernel when none is pinned. This is the one filter of the reference
// kernels: BTF that a host uploaded and nobody vouched for (unverified)
// must never be one, since every compile of that arch would read it.
func referenceCandidate(k store.Kernel) bool {
	return !k.Unverified()
}

// PinReference pins kernel kid as its arch's reference kernel; by names
// the admin. A kernel that may not be a reference (referenceCandidate) is
// refused with an InputError.
func (a *Archive) PinReference(ctx context.Context, kid, by string) (store.Kernel, error) {
	k, err := a.db.Kernel(ctx, kid)
	if err != nil {
		return k, err
	}
	if !referenceCandidate(k) {
		return k, &InputError{fmt.Errorf("kernel %s is unverified (uploaded by host %s): approve it before pinning it", kid, k.SourceHost)}
	}
	if _, ok := a.defaults[k.Arch]; ok {
		return k, &InputError{fmt.Errorf("the %s reference kernel is set with --default-kernel; a pin would not apply", k.Arch)}
	}
	return a.db.PinReference(ctx, kid, by)
}

// UnpinReference removes the pin of arch's reference kernel.
func (a *Archive) UnpinReference(ctx context.Context, arch string) error {
	return a.db.UnpinReference(ctx, arch)
}

// Pinned reports whether arch's reference kernel is pinned (by an admin or
// --default-kernel) rather than the arch's newest.
func (a *Archive) Pinned(ctx context.Context, arch string) bool {
	if _, ok := a.defaults[arch]; ok {
		return true
	}
	_, err := a.db.PinnedReference(ctx, arch)
	return err == nil
}

// VmlinuxH returns the path and digest of vmlinux.h generated from a
// kernel's BTF, generating it once per BTF digest.
func (a *Archive) VmlinuxH(ctx context.Context, k store.Kernel) (path, digest string, err error) {
	dir := filepath.Join(a.dir, k.BTFBlob)
	path = filepath.Join(dir, "vmlinux.h")
	v, err, _ := a.group.Do("vmlinux.h:"+k.BTFBlob, func() (any, error) {
		if b, err := os.ReadFile(path); err == nil {
			return blob.Sum(b).String(), nil
		}
		raw, err := a.readBlob(ctx, k.BTFBlob, k.BTFSize)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
		btfPath := filepath.Join(dir, "vmlinux.btf")
		if err := os.WriteFile(btfPath, raw, 0o640); err != nil {
			return nil, err
		}
		defer os.Remove(btfPath)
		bpftool, err := exec.LookPath("bpftool")
		if err != nil {
			bpftool = "/usr/sbin/bpftool"
		}
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bpftool, "btf", "dump", "file", btfPath, "format", "c")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("bpftool btf dump of %s: %v: %s", k.KID, err, strings.TrimSpace(stderr.String()))
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, out, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
		return blob.Sum(out).String(), nil
	})
	if err != nil {
		return "", "", fmt.Errorf("vmlinux.h for %s: %w", k.KID, err)
	}
	return path, v.(string), nil
}
