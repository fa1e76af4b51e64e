package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/go-chi/chi/v5"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/store"
)

// maxKernelUpload bounds a kernel import's body (a Debian linux-image .deb
// is about 70 MB).
const maxKernelUpload = 512 << 20

func (s *Server) kernelJSON(k store.Kernel, def map[string]string, counts map[string]int) api.Kernel {
	return api.Kernel{ID: k.KID, Distro: k.Distro, Version: k.Version, Arch: k.Arch, Release: k.Release, Build: k.Build,
		VersionCode: k.VersionCode, BTF: api.Blob{Digest: k.BTFBlob, Size: k.BTFSize}, Modules: k.ModulesCount,
		ModulesSize: k.ModulesSize, HasConfig: k.ConfigBlob != "", HasImage: k.ImageBlob != "", Source: k.Source,
		Trust: k.Trust, SourceHost: k.SourceHost, CreatedAt: k.CreatedAt, Default: def[k.Arch] == k.KID,
		Artifacts: counts[k.KID]}
}

func (s *Server) defaults(ctx context.Context) map[string]string {
	def := map[string]string{}
	if s.cfg.Archive == nil {
		return def
	}
	for _, arch := range api.Arches {
		if k, err := s.cfg.Archive.Default(ctx, arch); err == nil {
			def[arch] = k.KID
		}
	}
	return def
}

func (s *Server) listKernels(w http.ResponseWriter, r *http.Request) {
	arch := r.URL.Query().Get("arch")
	if arch != "" {
		a, err := kernel.NormalizeArch(arch) // aliases: aarch64, amd64
		if err != nil {
			s.error(w, r, http.StatusBadRequest, err)
			return
		}
		arch = a
	}
	ks, err := s.cfg.DB.Kernels(r.Context(), arch)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	counts, err := s.cfg.DB.ArtifactCounts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	def := s.defaults(r.Context())
	out := make([]api.Kernel, 0, len(ks))
	for _, k := range ks {
		out = append(out, s.kernelJSON(k, def, counts))
	}
	s.json(w, http.StatusOK, out)
}

// kernelID reads the kernel id from the path's wildcard (ids hold slashes).
func kernelParam(r *http.Request) string { return strings.Trim(chi.URLParam(r, "*"), "/") }

func (s *Server) getKernel(w http.ResponseWriter, r *http.Request) {
	k, err := s.cfg.DB.Kernel(r.Context(), kernelParam(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	counts, _ := s.cfg.DB.ArtifactCounts(r.Context())
	s.json(w, http.StatusOK, s.kernelJSON(k, s.defaults(r.Context()), counts))
}

func (s *Server) deleteKernel(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.DB.DeleteKernel(r.Context(), kernelParam(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// importKernels imports kernels: the body is one file in any format package
// source reads (.btf.tar.xz, raw BTF, vmlinux ELF, linux-image .deb, kernel
// image), or multipart/form-data with a "btf" part (raw vmlinux BTF), any
// number of "module" parts (split BTF, the filename naming the module) and
// an optional "config" part — what `bpfarm kernels import --host` and agents
// send. A tar archive is a packed btfhub-archive tree: every good file
// imports, and the answer lists the refused ones under "refused" (200).
// Query: id=DISTRO/VERSION/ARCH/RELEASE (names or completes the identity
// of one kernel), replace=true (another BTF may replace an existing id).
func (s *Server) importKernels(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var override kernel.ID
	if v := q.Get("id"); v != "" {
		id, err := kernel.ParseID(v)
		if err != nil {
			s.error(w, r, http.StatusBadRequest, err)
			return
		}
		override = id
	}
	replace, _ := strconv.ParseBool(q.Get("replace"))
	p := auth.FromContext(r.Context())
	opt := archive.ImportOptions{ID: override, Replace: replace, By: p.Name}
	if p.Role == api.RoleHost {
		opt.SourceHost = p.Host // requireKernelImport let only the host's own kernel through
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxKernelUpload)

	def := s.defaults(r.Context())
	var res api.KernelImport
	add := func(imp intake.Imported) {
		res.Kernels = append(res.Kernels, api.KernelImported{Kernel: s.kernelJSON(imp.Kernel, def, nil),
			Created: imp.Created, Queued: imp.Queued})
	}
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		k, err := readKernelParts(multipart.NewReader(r.Body, params["boundary"]))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		imp, err := s.cfg.Intake.Import(r.Context(), k, opt)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		add(imp)
		s.json(w, http.StatusOK, res)
		return
	}
	tmp, err := os.CreateTemp(s.cfg.TempDir, "kernel-upload-*")
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, r.Body); err != nil {
		s.fail(w, r, err)
		return
	}
	tmp.Close()
	name := q.Get("name") // the client's file name, for messages
	if name == "" {
		name = "upload"
	}
	fi, err := s.cfg.Intake.ImportFile(r.Context(), tmp.Name(), name, opt)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, imp := range fi.Kernels {
		add(imp)
	}
	res.Refused = fi.Refused
	s.json(w, http.StatusOK, res)
}

// readKernelParts reads a multipart kernel upload.
func readKernelParts(mr *multipart.Reader) (*source.Kernel, error) {
	k := &source.Kernel{Source: "upload"}
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &archive.InputError{Err: fmt.Errorf("kernel upload: %w", err)}
		}
		_, params, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		data, err := io.ReadAll(io.LimitReader(p, archive.MaxBTFSize))
		if err != nil {
			return nil, err
		}
		switch params["name"] {
		case "btf":
			k.BTF = data
		case "module":
			name := params["filename"]
			if name == "" || strings.ContainsAny(name, "/\\\x00") {
				return nil, &archive.InputError{Err: fmt.Errorf("kernel upload: module part needs a plain file name, got %q", name)}
			}
			k.Modules = append(k.Modules, source.Module{Name: name, BTF: data})
		case "config":
			k.Config = data
		case "build":
			k.Build = strings.TrimSpace(string(data))
		case "source":
			k.Source = strings.TrimSpace(string(data))
		default:
			return nil, &archive.InputError{Err: fmt.Errorf("kernel upload: unknown part %q (want btf, module, config, build, source)", params["name"])}
		}
	}
	if len(k.BTF) == 0 {
		return nil, &archive.InputError{Err: errors.New("kernel upload: no \"btf\" part")}
	}
	base, err := btf.LoadSpecFromReader(bytes.NewReader(k.BTF))
	if err != nil {
		return nil, &archive.InputError{Err: fmt.Errorf("kernel upload: btf: not valid BTF: %w", err)}
	}
	for _, m := range k.Modules {
		if _, err := btf.LoadSplitSpecFromReader(bytes.NewReader(m.BTF), base); err != nil {
			return nil, &archive.InputError{Err: fmt.Errorf("kernel upload: module %s: not valid split BTF: %w", m.Name, err)}
		}
	}
	return k, nil
}

func (s *Server) listArtifacts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.ArtifactFilter{Program: q.Get("program"), Kernel: q.Get("kernel"), Revision: q.Get("revision")}
	if v := q.Get("build"); v != "" {
		f.BuildID, _ = strconv.ParseInt(v, 10, 64)
	}
	f.Limit, _ = strconv.Atoi(q.Get("limit"))
	as, err := s.cfg.DB.Artifacts(r.Context(), f)
	if err == nil {
		as, err = s.servedArtifacts(r.Context(), as)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(as) == 0 {
		as = []api.Artifact{}
	}
	if err := s.cfg.DB.WithVerifications(r.Context(), as); err != nil { // verify.go
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, as)
}

func (s *Server) artifactID(w http.ResponseWriter, r *http.Request) (api.Artifact, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("artifact id %q: not a positive integer", chi.URLParam(r, "id")))
		return api.Artifact{}, false
	}
	a, err := s.cfg.DB.Artifact(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return a, false
	}
	k, err := s.cfg.DB.Kernel(r.Context(), a.Kernel)
	if err != nil {
		s.fail(w, r, err)
		return a, false
	}
	if s.refuseUnserved(w, r, k) {
		return a, false
	}
	return a, true
}

// servedArtifacts drops the artifacts of kernels the request's token may
// not be served (unverified kernels other hosts uploaded).
func (s *Server) servedArtifacts(ctx context.Context, as []api.Artifact) ([]api.Artifact, error) {
	p := auth.FromContext(ctx)
	admin := auth.Allows(p.Role, api.RoleAdmin)
	ks, err := s.cfg.DB.UnverifiedKernels(ctx)
	if err != nil || len(ks) == 0 {
		return as, err
	}
	out := as[:0]
	for _, a := range as {
		if k, ok := ks[a.Kernel]; ok && !k.ServedTo(p.Host, admin) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.artifactID(w, r); ok {
		s.withVerification(r.Context(), &a) // verify.go
		s.json(w, http.StatusOK, a)
	}
}

func (s *Server) getArtifactManifest(w http.ResponseWriter, r *http.Request) {
	a, ok := s.artifactID(w, r)
	if !ok {
		return
	}
	if a.Manifest == nil {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("artifact %d has no manifest (state %s)", a.ID, a.State))
		return
	}
	s.serveBlob(w, r, a.Manifest.Digest, "application/json")
}

// resolve finds the artifact of a program for a kernel: the exact kernel id,
// else the same release and arch under another distro entry, else a 404
// naming the nearest kernels. With wait=DURATION it waits for a relocation
// in progress.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	q := r.URL.Query()
	want, err := kernel.ParseID(q.Get("kernel"))
	if err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("kernel: %w", err))
		return
	}
	ctx := r.Context()
	p := auth.FromContext(ctx)
	k, match, err := s.matchKernel(ctx, want, func(k store.Kernel) bool {
		return k.ServedTo(p.Host, auth.Allows(p.Role, api.RoleAdmin))
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if s.refuseUnserved(w, r, k) {
		return
	}
	revision := ""
	if rv := q.Get("revision"); rv != "" {
		if revision, _, _, err = s.cfg.DB.RevisionBlob(ctx, name, rv); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	var wait time.Duration
	if ws := q.Get("wait"); ws != "" {
		if wait, err = time.ParseDuration(ws); err != nil || wait < 0 {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("wait %q: want a duration such as 30s", ws))
			return
		}
		wait = min(wait, 60*time.Second)
	}
	deadline := time.Now().Add(wait)
	for {
		a, err := s.pickArtifact(ctx, name, revision, k)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if a.State == api.ArtifactDone {
			etag := `"sha256:` + a.Manifest.Digest + `"`
			if r.Header.Get("If-None-Match") == etag {
				w.Header().Set("ETag", etag)
				w.WriteHeader(http.StatusNotModified)
				return
			}
			d, _ := blob.ParseDigest(a.Manifest.Digest)
			mb, err := blob.ReadAll(ctx, s.cfg.Blobs, d, 16<<20)
			if err != nil {
				s.serverError(w, r, err)
				return
			}
			m, err := manifest.Parse(mb)
			if err != nil {
				s.serverError(w, r, err)
				return
			}
			w.Header().Set("ETag", etag)
			s.withVerification(ctx, &a) // verify.go
			s.json(w, http.StatusOK, api.Resolved{Revision: a.Revision, Kernel: a.Kernel, Artifact: a, Manifest: m, Match: match})
			return
		}
		if a.State == api.ArtifactError {
			s.error(w, r, http.StatusInternalServerError, fmt.Errorf("artifact of %s for %s failed: %s", name, k.KID, a.Error))
			return
		}
		if !time.Now().Before(deadline) {
			w.Header().Set("Retry-After", "1")
			s.error(w, r, http.StatusServiceUnavailable, fmt.Errorf("artifact of %s for %s is being relocated (%s); retry shortly", name, k.KID, a.State))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pickArtifact returns the artifact of the program's revision (the latest
// one with artifacts for k when revision is empty) for kernel k.
func (s *Server) pickArtifact(ctx context.Context, program, revision string, k store.Kernel) (api.Artifact, error) {
	as, err := s.cfg.DB.Artifacts(ctx, store.ArtifactFilter{Program: program, Revision: revision, Kernel: k.KID, Limit: 50})
	if err != nil {
		return api.Artifact{}, err
	}
	if len(as) == 0 {
		if _, err := s.cfg.DB.Program(ctx, program); err != nil {
			return api.Artifact{}, err
		}
		what := "any revision"
		if revision != "" {
			what = "revision " + revision[:12]
		}
		return api.Artifact{}, fmt.Errorf("no artifact of %s (%s) for kernel %s: no succeeded %s build of it was relocated for this kernel: %w",
			program, what, k.KID, k.Arch, store.ErrNotFound)
	}
	// Newest revision first: artifacts are listed newest first; prefer a
	// finished one of the newest build.
	return as[0], nil
}

// matchKernel maps a requested kernel id onto the archive: exact, or the
// same release and arch under another distro entry.
//
// served tells which kernels the caller may be served artifacts of; a
// release match prefers those.
func (s *Server) matchKernel(ctx context.Context, want kernel.ID, served func(store.Kernel) bool) (store.Kernel, string, error) {
	k, err := s.cfg.DB.Kernel(ctx, want.String())
	if err == nil {
		return k, "exact", nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return k, "", err
	}
	ks, err := s.cfg.DB.Kernels(ctx, want.Arch)
	if err != nil {
		return k, "", err
	}
	var other *store.Kernel
	for i, c := range ks {
		if c.Release != want.Release {
			continue
		}
		if served(c) {
			return c, "release", nil
		}
		if other == nil {
			other = &ks[i]
		}
	}
	if other != nil {
		return *other, "release", nil // refused by the caller, naming why
	}
	return k, "", fmt.Errorf("kernel %s is not in the archive; nearest: %s: %w", want, nearest(ks, want, 5), store.ErrNotFound)
}

// nearest names up to n kernels of the archive closest to want: the same
// distro and version first, then the same major.minor series, then by
// distance in release order around want's release.
func nearest(ks []store.Kernel, want kernel.ID, n int) string {
	if len(ks) == 0 {
		return fmt.Sprintf("none (the archive holds no %s kernel)", want.Arch)
	}
	sorted := append([]store.Kernel(nil), ks...)
	sort.Slice(sorted, func(i, j int) bool { return kernel.CompareRelease(sorted[i].Release, sorted[j].Release) < 0 })
	at := sort.Search(len(sorted), func(i int) bool { return kernel.CompareRelease(sorted[i].Release, want.Release) >= 0 })
	series := func(release string) string {
		r, err := kernel.ParseRelease(release)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%d.%d", r.Major, r.Minor)
	}
	wantSeries := series(want.Release)
	type cand struct {
		k     store.Kernel
		score int
	}
	cs := make([]cand, 0, len(sorted))
	for i, k := range sorted {
		d := i - at
		if d < 0 {
			d = -d - 1
		}
		score := d
		if k.Distro != want.Distro || k.Version != want.Version {
			score += 1 << 20
		}
		if wantSeries == "" || series(k.Release) != wantSeries {
			score += 1 << 10
		}
		cs = append(cs, cand{k, score})
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].score < cs[j].score })
	var names []string
	for i := 0; i < len(cs) && i < n; i++ {
		names = append(names, cs[i].k.KID)
	}
	return strings.Join(names, ", ")
}
