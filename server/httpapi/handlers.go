package httpapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/store"
)

func debugStack() []byte { return debug.Stack() }

// push accepts a source bundle as a tar.gz body or as multipart/form-data
// (one "file" part per source file, its filename the relative path), and
// the options as query parameters (or form fields): arch (repeated or
// comma-separated), flag (repeated), entry.
func (s *Server) push(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if err := build.ValidProgramName(name); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBundleBytes)
	q := r.URL.Query()
	entry := q.Get("entry")
	arches, flags := splitList(q["arch"]), q["flag"]
	perKernel, _ := strconv.ParseBool(q.Get("per_kernel"))

	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		bundle *bpfsrc.Bundle
		err    error
	)
	switch ct {
	case "application/gzip", "application/x-gzip", "application/tar+gzip", "application/x-tar+gzip", "application/x-compressed-tar":
		bundle, err = bpfsrc.ReadTarGz(r.Body, entry, bpfsrc.DefaultLimits)
	case "application/x-tar", "application/tar":
		bundle, err = bpfsrc.ReadTar(r.Body, entry, bpfsrc.DefaultLimits)
	case "multipart/form-data":
		var form pushForm
		form, err = readMultipart(multipart.NewReader(r.Body, params["boundary"]), bpfsrc.DefaultLimits)
		if err == nil {
			if form.entry != "" {
				entry = form.entry
			}
			arches = append(arches, splitList(form.arches)...)
			flags = append(flags, form.flags...)
			bundle, err = bpfsrc.New(entry, form.files, bpfsrc.DefaultLimits)
		}
	default:
		s.error(w, r, http.StatusUnsupportedMediaType,
			fmt.Errorf("content type %q: send the bundle as application/gzip (tar.gz) or multipart/form-data", ct))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.cfg.Intake.Push(r.Context(), build.PushRequest{Program: name, Bundle: bundle, Arches: arches,
		Flags: flags, PushedBy: auth.FromContext(r.Context()).Name, PerKernel: perKernel, Headers: q.Get("headers")})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code := http.StatusAccepted
	if res.Created {
		code = http.StatusCreated
	}
	s.json(w, code, res)
}

type pushForm struct {
	files         []bpfsrc.File
	entry         string
	arches, flags []string
}

// readMultipart reads a multipart push. The file name is taken from the
// raw Content-Disposition (multipart.Part.FileName strips directories), and
// bpfsrc.New validates it like a tar entry.
func readMultipart(mr *multipart.Reader, lim bpfsrc.Limits) (pushForm, error) {
	var f pushForm
	var total int64
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		if err != nil {
			return f, &bpfsrc.InvalidError{Path: "multipart", Reason: err.Error()}
		}
		_, params, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		field := params["name"]
		data, err := io.ReadAll(io.LimitReader(p, lim.MaxFileSize+1))
		if err != nil {
			return f, err
		}
		switch field {
		case "file", "files", "file[]":
			fn := params["filename"]
			if int64(len(data)) > lim.MaxFileSize {
				return f, &bpfsrc.InvalidError{Path: fn, Reason: fmt.Sprintf("file exceeds %d bytes", lim.MaxFileSize)}
			}
			if total += int64(len(data)); total > lim.MaxTotalSize {
				return f, &bpfsrc.InvalidError{Path: fn, Reason: fmt.Sprintf("bundle exceeds %d bytes", lim.MaxTotalSize)}
			}
			if len(f.files) >= lim.MaxFiles {
				return f, &bpfsrc.InvalidError{Path: fn, Reason: fmt.Sprintf("bundle has more than %d files", lim.MaxFiles)}
			}
			f.files = append(f.files, bpfsrc.File{Name: fn, Data: data})
		case "entry":
			f.entry = strings.TrimSpace(string(data))
		case "arch":
			f.arches = append(f.arches, strings.TrimSpace(string(data)))
		case "flag":
			f.flags = append(f.flags, string(data))
		default:
			return f, &bpfsrc.InvalidError{Path: field, Reason: `unknown form field (want "file", "entry", "arch" or "flag")`}
		}
	}
}

func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (s *Server) listPrograms(w http.ResponseWriter, r *http.Request) {
	ps, err := s.cfg.DB.Programs(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ps == nil {
		ps = []api.Program{}
	}
	s.json(w, http.StatusOK, ps)
}

func (s *Server) getProgram(w http.ResponseWriter, r *http.Request) {
	p, err := s.cfg.DB.Program(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, p)
}

func (s *Server) getSource(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	digest, bd, _, err := s.cfg.DB.RevisionBlob(r.Context(), name, chi.URLParam(r, "revision"))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			err = &build.InputError{Err: err}
		}
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.tar.gz"`, name, digest[:12]))
	s.serveBlob(w, r, bd, "application/gzip")
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	bs, err := s.cfg.DB.Builds(r.Context(), store.BuildFilter{Program: q.Get("program"), State: q.Get("state"), Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if bs == nil {
		bs = []api.Build{}
	}
	s.json(w, http.StatusOK, bs)
}

func (s *Server) buildID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("build id %q: not a positive integer", chi.URLParam(r, "id")))
		return 0, false
	}
	return id, true
}

// getBuild returns a build; with ?wait=DURATION (at most 60s) it long-polls
// until the build is done or the duration passes.
func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := s.buildID(w, r)
	if !ok {
		return
	}
	var (
		b   api.Build
		err error
	)
	if ws := r.URL.Query().Get("wait"); ws != "" {
		d, perr := time.ParseDuration(ws)
		if perr != nil || d < 0 {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("wait %q: want a duration such as 30s", ws))
			return
		}
		ctx, cancel := contextWithTimeout(r, min(d, 60*time.Second))
		defer cancel()
		b, err = s.cfg.Builds.Wait(ctx, id)
	} else {
		b, err = s.cfg.DB.Build(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, b)
}

func (s *Server) getBuildLog(w http.ResponseWriter, r *http.Request) {
	id, ok := s.buildID(w, r)
	if !ok {
		return
	}
	b, err := s.cfg.DB.Build(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if b.Log == nil {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("build %d has no log yet (state %s)", id, b.State))
		return
	}
	s.serveBlob(w, r, b.Log.Digest, "text/plain; charset=utf-8")
}

func (s *Server) getBuildObject(w http.ResponseWriter, r *http.Request) {
	id, ok := s.buildID(w, r)
	if !ok {
		return
	}
	b, err := s.cfg.DB.Build(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if b.Object == nil {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("build %d has no object (state %s)", id, b.State))
		return
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.bpf.o"`, b.Program))
	s.serveBlob(w, r, b.Object.Digest, "application/x-elf")
}

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request) {
	if _, err := blob.ParseDigest(chi.URLParam(r, "digest")); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	// A file of an unverified kernel (its BTF, its artifacts) goes only to
	// the host that uploaded it, like the artifact it belongs to.
	k, found, err := s.cfg.DB.UnverifiedBlobKernel(r.Context(), chi.URLParam(r, "digest"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if found && s.refuseUnserved(w, r, k) {
		return
	}
	s.serveBlob(w, r, chi.URLParam(r, "digest"), "application/octet-stream")
}

// serveBlob streams a blob with a strong ETag (its digest), so clients can
// revalidate cheaply.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, digest, contentType string) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	etag := `"sha256:` + d.String() + `"`
	if match := r.Header.Get("If-None-Match"); match == etag || match == "*" {
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	info, err := s.cfg.Blobs.Stat(r.Context(), d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc, err := s.cfg.Blobs.Get(r.Context(), d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("ETag", etag)
	w.Header().Set("X-Content-Sha256", d.String())
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Warn("stream blob", "digest", d, "err", err)
	}
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.cfg.DB.Tokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ts == nil {
		ts = []api.Token{}
	}
	s.json(w, http.StatusOK, ts)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	dec := jsonDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(&req); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("token request: %w", err))
		return
	}
	if err := auth.ValidName(req.Name); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if req.Role == api.RoleHost {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("role host: host tokens are bound to a host: bpfarm hosts enroll NAME"))
		return
	}
	if !auth.ValidRole(req.Role) {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("role %q: want admin, publisher or reader", req.Role))
		return
	}
	secret, err := auth.NewSecret()
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	t, err := s.cfg.DB.CreateToken(r.Context(), req.Name, req.Role, auth.Hash(secret))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("token created", "name", t.Name, "role", t.Role, "by", auth.FromContext(r.Context()).Name)
	s.json(w, http.StatusCreated, api.TokenCreated{Token: t, Secret: secret})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if err := s.cfg.DB.RevokeToken(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("token revoked", "name", name, "by", auth.FromContext(r.Context()).Name)
	w.WriteHeader(http.StatusNoContent)
}
