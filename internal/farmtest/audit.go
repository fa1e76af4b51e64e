//go:build linux

package farmtest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
)

// Audit is what a farm at rest holds, as its API shows it, and what is
// wrong with it.
type Audit struct {
	Programs, Builds, Succeeded, Failed int
	Kernels, Artifacts, Blobs           int
	// Pending lists builds and artifacts not in a final state (queued or
	// running): a farm at rest has none.
	Pending []string
	// Problems lists every broken promise: a succeeded build without an
	// artifact for a kernel of its arch, a blob named but not stored.
	Problems []string
	// FailedBuilds describes each failed build: id, program, kind and
	// error (a build may fail, but a test wants to know why).
	FailedBuilds []string
}

// Settled reports whether nothing is pending.
func (a *Audit) Settled() bool { return len(a.Pending) == 0 }

// Err returns the problems and pending work as one error, or nil.
func (a *Audit) Err() error {
	var errs []error
	for _, p := range a.Problems {
		errs = append(errs, errors.New(p))
	}
	for _, p := range a.Pending {
		errs = append(errs, errors.New("not final: "+p))
	}
	return errors.Join(errs...)
}

// String summarizes the audit.
func (a *Audit) String() string {
	return fmt.Sprintf("%d programs, %d builds (%d succeeded, %d failed), %d kernels, %d artifacts, %d blobs checked; %d pending, %d problems",
		a.Programs, a.Builds, a.Succeeded, a.Failed, a.Kernels, a.Artifacts, a.Blobs, len(a.Pending), len(a.Problems))
}

// maxAuditBlob bounds a blob fetched by the audit (kernel BTF with
// modules is the largest).
const maxAuditBlob = 1 << 30

// AuditAPI walks the farm through c's API: every program's builds and
// artifacts, and the archive's kernels. Every build must be succeeded or
// failed; every succeeded build of a program's latest revision must have
// an artifact, done or with its error recorded, for every kernel of its
// arch, and an older revision's build one for every kernel imported
// before the build was queued (a kernel imported later is relocated for
// latest revisions only); every blob a build, artifact or kernel names
// must be served whole by GET /api/v1/blobs/DIGEST.
func AuditAPI(ctx context.Context, c *client.Client) (*Audit, error) {
	a := &Audit{}
	progs, err := c.Programs(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: programs: %w", err)
	}
	kernels, err := c.Kernels(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("audit: kernels: %w", err)
	}
	a.Programs, a.Kernels = len(progs), len(kernels)
	blobs := map[string]int64{}
	// A blob's size is checked when some row gives it (artifacts name
	// their CO-RE object without one).
	named := func(b *api.Blob) {
		if b != nil && b.Digest != "" {
			blobs[b.Digest] = max(blobs[b.Digest], b.Size)
		}
	}
	for _, k := range kernels {
		named(&k.BTF)
	}
	for _, p := range progs {
		builds, err := c.Builds(ctx, p.Name)
		if err != nil {
			return nil, fmt.Errorf("audit: builds of %s: %w", p.Name, err)
		}
		arts, err := c.Artifacts(ctx, p.Name, "")
		if err != nil {
			return nil, fmt.Errorf("audit: artifacts of %s: %w", p.Name, err)
		}
		byBuild := map[int64]map[string]api.Artifact{}
		for _, art := range arts {
			a.Artifacts++
			if byBuild[art.BuildID] == nil {
				byBuild[art.BuildID] = map[string]api.Artifact{}
			}
			byBuild[art.BuildID][art.Kernel] = art
			switch art.State {
			case api.ArtifactDone:
				named(art.Object)
				named(art.MinBTF)
				named(art.Relocated)
				named(art.Manifest)
			case api.ArtifactError:
				if art.Error == "" {
					a.Problems = append(a.Problems, fmt.Sprintf("artifact #%d (%s build #%d, %s): error with no message", art.ID, p.Name, art.BuildID, art.Kernel))
				}
			default:
				a.Pending = append(a.Pending, fmt.Sprintf("artifact #%d (%s build #%d, %s): %s", art.ID, p.Name, art.BuildID, art.Kernel, art.State))
			}
		}
		latest := ""
		if p.Latest != nil {
			latest = p.Latest.Digest
		}
		for _, b := range builds {
			a.Builds++
			switch b.State {
			case api.StateFailed:
				a.Failed++
				named(b.Log)
				a.FailedBuilds = append(a.FailedBuilds, fmt.Sprintf("build #%d (%s %s, %d attempts): %s: %s", b.ID, p.Name, b.Arch, b.Attempts, b.ErrorKind, b.Error))
				continue
			case api.StateSucceeded:
				a.Succeeded++
			default:
				a.Pending = append(a.Pending, fmt.Sprintf("build #%d (%s %s): %s", b.ID, p.Name, b.Arch, b.State))
				continue
			}
			named(b.Object)
			named(b.Log)
			if b.Object == nil || b.Object.Digest == "" {
				a.Problems = append(a.Problems, fmt.Sprintf("build #%d (%s %s): succeeded without an object", b.ID, p.Name, b.Arch))
			}
			if b.Kernel != "" {
				continue // a per-kernel build: relocated for its own kernel only
			}
			for _, k := range kernels {
				if k.Arch != b.Arch || k.Trust != api.KernelTrusted {
					continue
				}
				if b.Revision != latest && !k.CreatedAt.Before(b.CreatedAt) {
					continue
				}
				if _, ok := byBuild[b.ID][k.ID]; !ok {
					a.Problems = append(a.Problems, fmt.Sprintf("build #%d (%s %s, revision %.12s): succeeded, no artifact for kernel %s",
						b.ID, p.Name, b.Arch, b.Revision, k.ID))
				}
			}
		}
	}
	for d, size := range blobs {
		a.Blobs++
		got, err := c.Blob(ctx, d, maxAuditBlob)
		if err != nil {
			a.Problems = append(a.Problems, fmt.Sprintf("blob %s named by the API: %v", d, err))
			continue
		}
		if size != 0 && int64(len(got)) != size {
			a.Problems = append(a.Problems, fmt.Sprintf("blob %s named by the API with %d bytes: served %d", d, size, len(got)))
		}
	}
	return a, nil
}

// AuditBlobRefs checks that every blob any row of the farm's database
// names (bundles, objects, logs, kernels' BTF, modules, configs and
// images, artifacts' files) is in the farm's blob store, read directly
// (not through a server). It returns the number of digests checked.
func (f *Farm) AuditBlobRefs(ctx context.Context) (int, error) {
	db, err := f.openStore(ctx)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	refs, err := db.BlobRefs(ctx)
	if err != nil {
		return 0, err
	}
	bs, err := f.blobStore(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, r := range refs {
		d, err := blob.ParseDigest(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("row names blob %q: %w", r, err))
			continue
		}
		if _, err := bs.Stat(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("row names missing blob %s: %w", r, err))
		}
	}
	return len(refs), errors.Join(errs...)
}

// openStore opens the farm's database as the servers do.
func (f *Farm) openStore(ctx context.Context) (*store.DB, error) {
	path := filepath.Join(f.Procs[0].Data, "bpfarm.db")
	if f.cfg.Database != "" {
		path = f.cfg.Database
	}
	return store.Open(ctx, path)
}

// blobStore opens the farm's blob store: the bucket, or the single
// process's blob directory.
func (f *Farm) blobStore(ctx context.Context) (blob.Store, error) {
	if f.cfg.S3.Endpoint != "" {
		return blob.NewS3(ctx, f.cfg.S3)
	}
	return blob.NewLocal(filepath.Join(f.Procs[0].Data, "blobs"))
}

// WaitSettled audits the farm through a running API process until
// nothing is pending, and returns the last audit; it gives up after
// limit (a guard against hanging, not a timing assertion).
func (f *Farm) WaitSettled(ctx context.Context, limit time.Duration) (*Audit, error) {
	deadline := time.Now().Add(limit)
	for {
		a, err := AuditAPI(ctx, f.Live())
		if err == nil && a.Settled() {
			return a, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return a, fmt.Errorf("farm not settled after %v: %s: %w", limit, a, a.Err())
		}
		time.Sleep(time.Second)
	}
}
