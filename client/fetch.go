package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/internal/fsutil"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
)

// MaxArtifactFile bounds each downloaded artifact file.
const MaxArtifactFile = 256 << 20

// FetchOptions control FetchArtifact.
type FetchOptions struct {
	// PublicKey is the server's pinned signing key. Required: an artifact
	// whose manifest it does not verify is refused.
	PublicKey ed25519.PublicKey
	// CacheDir keeps the last good artifact of each program and kernel, and
	// the files by digest, so that hosts keep working while the server is
	// unreachable. Empty disables the cache.
	CacheDir string
	// Wait is how long the server may hold the request while the artifact
	// is being relocated (default 30s).
	Wait time.Duration
	// Attempts bounds tries on transient failures (default 5), with
	// exponential backoff from Backoff (default 250ms) plus jitter.
	Attempts int
	Backoff  time.Duration
	// Offline uses the cache only.
	Offline bool
	// RequireVerified refuses an artifact unless its signed manifest
	// records that the verifier of this exact kernel (the manifest's
	// kernel is the kernel id asked for) accepted every program of it, or
	// every program of VerifiedPrograms when set (see CheckVerified).
	RequireVerified  bool
	VerifiedPrograms []string
	// HostKernel is the kernel id of the host that loads the artifact,
	// when kernelID is not it (the daemon fetches for the archive kernel
	// its desired state names): an artifact for another arch or release
	// is refused.
	HostKernel string
	// RevisionIsLatest says that revision was not asked for explicitly but
	// is the server's newest for this host (an unpinned assignment's
	// desired revision). Like an empty revision, it is refused when older
	// than the newest revision of the program loaded here (RecordLoaded,
	// in CacheDir); a revision asked for explicitly is not.
	RevisionIsLatest bool
}

// Fetched is a verified artifact.
type Fetched struct {
	Manifest  *manifest.Manifest
	Object    []byte
	MinBTF    []byte
	Relocated []byte
	// FromCache is set when the server could not be reached and the last
	// good artifact from the cache was used.
	FromCache bool
	// Match says how the server matched the kernel: "exact" or "release".
	Match string
}

// ErrNoPublicKey is returned by FetchArtifact without a pinned key.
var ErrNoPublicKey = errors.New("no pinned signing key: unsigned or unverifiable artifacts are refused")

// FetchArtifact resolves, downloads and verifies a program's artifact for
// a kernel id: CheckArtifact (the manifest's ed25519 signature against the
// pinned key; that it is the program, revision, kernel and arch asked for
// and resolved; not older than the newest loaded here) and every file's
// sha256 and size against the manifest. revision may be empty (the
// newest). When the server is unreachable it falls back to the last good
// artifact in the cache, checked the same way.
func (c *Client) FetchArtifact(ctx context.Context, program, kernelID, revision string, opt FetchOptions) (*Fetched, error) {
	if len(opt.PublicKey) != ed25519.PublicKeySize {
		return nil, ErrNoPublicKey
	}
	if opt.Wait == 0 {
		opt.Wait = 30 * time.Second
	}
	if opt.Attempts <= 0 {
		opt.Attempts = 5
	}
	if opt.Backoff <= 0 {
		opt.Backoff = 250 * time.Millisecond
	}
	if opt.RequireVerified {
		// The same fetch, then the verdicts of the signed manifest.
		o := opt
		o.RequireVerified = false
		f, err := c.FetchArtifact(ctx, program, kernelID, revision, o)
		if err != nil {
			return nil, err
		}
		if err := CheckVerified(f.Manifest, kernelID, opt.VerifiedPrograms); err != nil {
			return nil, fmt.Errorf("artifact of %s for %s: %w", program, kernelID, err)
		}
		return f, nil
	}
	newest, err := NewestLoaded(opt.CacheDir, program)
	if err != nil {
		return nil, err
	}
	req := Request{Program: program, Revision: revision, Kernel: kernelID, Host: opt.HostKernel, Newest: newest,
		AllowOlder: revision != "" && !opt.RevisionIsLatest}
	cache := artifactCache{dir: opt.CacheDir}
	if opt.Offline {
		return cache.lastGood(req, opt.PublicKey)
	}
	var f *Fetched
	for attempt := 0; attempt < opt.Attempts; attempt++ {
		if attempt > 0 {
			d := opt.Backoff << (attempt - 1)
			d += time.Duration(rand.Int64N(int64(d)/2 + 1))
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(d):
			}
		}
		f, err = c.fetchOnce(ctx, req, opt, &cache)
		if err == nil || !IsTransient(err) {
			break
		}
	}
	if err != nil && IsTransient(err) && cache.dir != "" {
		if f, cerr := cache.lastGood(req, opt.PublicKey); cerr == nil {
			return f, nil
		}
	}
	return f, err
}

func (c *Client) fetchOnce(ctx context.Context, req Request, opt FetchOptions, cache *artifactCache) (*Fetched, error) {
	program, kernelID, revision := req.Program, req.Kernel, req.Revision
	q := url.Values{"kernel": {kernelID}, "wait": {opt.Wait.String()}}
	if revision != "" {
		q.Set("revision", revision)
	}
	hdr := http.Header{}
	cached, _ := cache.manifest(program, kernelID)
	if etag := cache.etag(program, kernelID); cached != nil && revision == "" && etag != "" {
		hdr.Set("If-None-Match", etag)
	}
	rctx, cancel := context.WithTimeout(ctx, opt.Wait+30*time.Second)
	defer cancel()
	resp, err := c.Do(rctx, http.MethodGet, "/api/v1/programs/"+url.PathEscape(program)+"/artifact", q, nil, "", hdr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s for %s: %w", program, kernelID, err)
	}
	var (
		m     *manifest.Manifest
		match = "exact"
		etag  = resp.Header.Get("ETag")
	)
	if resp.StatusCode == http.StatusNotModified {
		resp.Body.Close()
		m = cached
	} else {
		var res api.Resolved
		err := decode(resp, &res)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		m, match = res.Manifest, res.Match
		req.ResolvedRevision, req.ResolvedKernel, req.Match = res.Revision, res.Kernel, res.Match
	}
	if m == nil {
		return nil, fmt.Errorf("resolve %s for %s: no manifest in the answer", program, kernelID)
	}
	if err := CheckArtifact(opt.PublicKey, req, m); err != nil {
		return nil, err
	}
	f := &Fetched{Manifest: m, Match: match}
	for role, dst := range map[string]*[]byte{manifest.FileObject: &f.Object, manifest.FileMinBTF: &f.MinBTF, manifest.FileRelocated: &f.Relocated} {
		file, ok := m.Files[role]
		if !ok {
			continue
		}
		data, ok := cache.file(file.SHA256)
		if !ok || m.VerifyFile(role, data) != nil {
			if data, err = c.Blob(ctx, file.SHA256, MaxArtifactFile); err != nil {
				return nil, err
			}
		}
		if err := m.VerifyFile(role, data); err != nil {
			return nil, fmt.Errorf("artifact of %s for %s: %w", program, kernelID, err)
		}
		*dst = data
	}
	cache.store(program, kernelID, etag, f)
	return f, nil
}

// artifactCache is the agent's local store of last good artifacts:
// DIR/blobs/<sha256> and DIR/manifests/<program>/<kernel id, escaped>.json
// (with the server's ETag for it in .etag beside it).
type artifactCache struct{ dir string }

func (a *artifactCache) manifestPath(program, kernelID string) string {
	return filepath.Join(a.dir, "manifests", url.PathEscape(program), url.PathEscape(kernelID)+".json")
}

func (a *artifactCache) manifest(program, kernelID string) (*manifest.Manifest, error) {
	if a.dir == "" {
		return nil, errors.New("no cache")
	}
	b, err := os.ReadFile(a.manifestPath(program, kernelID))
	if err != nil {
		return nil, err
	}
	return manifest.Parse(b)
}

func (a *artifactCache) etag(program, kernelID string) string {
	if a.dir == "" {
		return ""
	}
	b, _ := os.ReadFile(strings.TrimSuffix(a.manifestPath(program, kernelID), ".json") + ".etag")
	return strings.TrimSpace(string(b))
}

func (a *artifactCache) file(sha string) ([]byte, bool) {
	if a.dir == "" || len(sha) != 64 || strings.ContainsAny(sha, "/.") {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(a.dir, "blobs", sha))
	return b, err == nil
}

// store records f as the last good artifact; failures only cost the cache.
func (a *artifactCache) store(program, kernelID, etag string, f *Fetched) {
	if a.dir == "" {
		return
	}
	for role, data := range map[string][]byte{manifest.FileObject: f.Object, manifest.FileMinBTF: f.MinBTF, manifest.FileRelocated: f.Relocated} {
		file, ok := f.Manifest.Files[role]
		if !ok || data == nil {
			continue
		}
		fsutil.WriteFileAtomic(filepath.Join(a.dir, "blobs", file.SHA256), data, 0o600)
	}
	b, err := json.MarshalIndent(f.Manifest, "", "  ")
	if err == nil {
		p := a.manifestPath(program, kernelID)
		if fsutil.WriteFileAtomic(p, append(b, '\n'), 0o600) == nil && etag != "" {
			fsutil.WriteFileAtomic(strings.TrimSuffix(p, ".json")+".etag", []byte(etag+"\n"), 0o600)
		}
	}
}

// lastGood returns the cached artifact, checked again as a fetched one is.
func (a *artifactCache) lastGood(req Request, pub ed25519.PublicKey) (*Fetched, error) {
	program, kernelID, revision := req.Program, req.Kernel, req.Revision
	m, err := a.manifest(program, kernelID)
	if err != nil {
		return nil, fmt.Errorf("no cached artifact of %s for %s (%v): %w", program, kernelID, err, ErrNotCached)
	}
	if revision != "" && !strings.HasPrefix(m.Revision, revision) {
		return nil, fmt.Errorf("the cached artifact of %s for %s is revision %s, not %s: %w", program, kernelID, short(m.Revision),
			short(revision), ErrNotCached)
	}
	if err := CheckArtifact(pub, req, m); err != nil {
		return nil, fmt.Errorf("cached %w", err)
	}
	f := &Fetched{Manifest: m, FromCache: true, Match: "cache"}
	for role, dst := range map[string]*[]byte{manifest.FileObject: &f.Object, manifest.FileMinBTF: &f.MinBTF, manifest.FileRelocated: &f.Relocated} {
		file, ok := m.Files[role]
		if !ok {
			continue
		}
		data, ok := a.file(file.SHA256)
		if !ok {
			return nil, fmt.Errorf("cached artifact of %s for %s: %s missing", program, kernelID, file.Name)
		}
		if err := m.VerifyFile(role, data); err != nil {
			return nil, fmt.Errorf("cached artifact of %s for %s: %w", program, kernelID, err)
		}
		*dst = data
	}
	return f, nil
}
