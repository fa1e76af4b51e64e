package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/lease"
	"github.com/bpfarm/bpfarm/server/store"
)

// actAsHost checks that the request's token may act as host name: a host
// token bound to that name. Otherwise it answers 403 naming who the token
// is, and returns false.
func (s *Server) actAsHost(w http.ResponseWriter, r *http.Request, name string) bool {
	p := auth.FromContext(r.Context())
	if p.ActsAsHost(name) {
		return true
	}
	switch {
	case p.Role == api.RoleHost:
		s.error(w, r, http.StatusForbidden, fmt.Errorf("token %q is host %s's token: it may not act as host %s",
			p.Name, p.Host, name))
	default:
		s.error(w, r, http.StatusForbidden, fmt.Errorf("token %q has role %s: only host %s's own token may register, "+
			"report or upload BTF as it (enroll it: bpfarm hosts enroll %s)", p.Name, p.Role, name, name))
	}
	return false
}

// enrollHost creates a host token bound to the host name and revokes the
// host's previous token (POST /api/v1/hosts/{name}/enroll, admin).
func (s *Server) enrollHost(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if err := validHostName(name); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	var req api.HostEnrollment
	if r.ContentLength != 0 {
		if err := jsonDecoder(http.MaxBytesReader(w, r.Body, maxHostBody)).Decode(&req); err != nil {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("host enrollment: %w", err))
			return
		}
	}
	if err := validLabels("label", req.Labels); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("host %s: %w", name, err))
		return
	}
	secret, err := auth.NewSecret()
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	tok, revoked, err := s.cfg.DB.EnrollHost(r.Context(), name, req.Labels, hostTokenName(name), auth.Hash(secret))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	by := auth.FromContext(r.Context()).Name
	s.log.Info("host enrolled", "host", name, "token", tok.Name, "labels", req.Labels, "revoked", revoked, "by", by)
	if len(req.Labels) > 0 {
		s.hostsChanged()
	}
	s.json(w, http.StatusCreated, api.TokenCreated{Token: tok, Secret: secret})
}

// hostTokenName names a host's token: "host-NAME-XXXXXX" (NAME cut to fit
// token names), unique per enrollment.
func hostTokenName(host string) string {
	b := make([]byte, 3)
	rand.Read(b)
	if len(host) > 50 {
		host = host[:50]
	}
	return "host-" + strings.Trim(host, ".-_") + "-" + hex.EncodeToString(b)
}

// postKernel routes POST /kernels/{kernel}/approve (kernel ids hold
// slashes, so the wildcard takes every POST under /kernels/).
func (s *Server) postKernel(w http.ResponseWriter, r *http.Request) {
	kid, ok := strings.CutSuffix(kernelParam(r), "/approve")
	if !ok {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("no route for POST %s (want /api/v1/kernels/ID/approve)", r.URL.Path))
		return
	}
	k, changed, err := s.cfg.DB.ApproveKernel(r.Context(), kid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if changed {
		s.log.Info("kernel approved", "kernel", k.KID, "source_host", k.SourceHost, "by", auth.FromContext(r.Context()).Name)
		s.hostsChanged()
	}
	counts, _ := s.cfg.DB.ArtifactCounts(r.Context())
	s.json(w, http.StatusOK, s.kernelJSON(k, s.defaults(r.Context()), counts))
}

// refuseUnserved answers 403 when k's artifacts may not be served to the
// request's token (an unverified kernel another host uploaded) and
// reports whether it did.
func (s *Server) refuseUnserved(w http.ResponseWriter, r *http.Request, k store.Kernel) bool {
	p := auth.FromContext(r.Context())
	if k.ServedTo(p.Host, auth.Allows(p.Role, api.RoleAdmin)) {
		return false
	}
	s.error(w, r, http.StatusForbidden, fmt.Errorf("kernel %s is unverified (its BTF was uploaded by host %s): its artifacts "+
		"are served only to that host until an admin approves it (bpfarm kernels approve %s)", k.KID, k.SourceHost, k.KID))
	return true
}

func (s *Server) getQuota(w http.ResponseWriter, r *http.Request) {
	q, err := s.cfg.Quotas.Of(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, q)
}

func (s *Server) ownQuota(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	if p.Anonymous {
		s.error(w, r, http.StatusUnauthorized, fmt.Errorf("authentication required: anonymous readers have no quota"))
		return
	}
	q, err := s.cfg.Quotas.Of(r.Context(), p.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, q)
}

// putQuota sets a token's limit overrides: a positive field sets it, a
// negative one goes back to the default, zero keeps it.
func (s *Server) putQuota(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	var q api.Quota
	if err := jsonDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&q); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("quota: %w", err))
		return
	}
	if err := s.cfg.DB.SetQuotaOverrides(r.Context(), name, q); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("quota set", "token", name, "max_bytes", q.MaxBytes, "max_revisions", q.MaxRevisions,
		"max_builds_per_hour", q.MaxBuildsPerHour, "by", auth.FromContext(r.Context()).Name)
	s.getQuota(w, r)
}

// gc runs a garbage collection (POST /api/v1/gc?dry_run=true, admin).
func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	dry := false
	if v := r.URL.Query().Get("dry_run"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("dry_run %q: want true or false", v))
			return
		}
		dry = b
	}
	if s.cfg.GC == nil {
		s.error(w, r, http.StatusServiceUnavailable, fmt.Errorf("garbage collection is not configured on this server"))
		return
	}
	rep, err := s.cfg.GC(r.Context(), dry)
	if errors.Is(err, lease.ErrHeld) {
		s.error(w, r, http.StatusConflict, errors.New("garbage collection is running in another server process; try again when it is done"))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("gc", "dry_run", dry, "revisions", rep.Revisions, "builds", rep.Builds, "artifacts", rep.Artifacts,
		"blobs", rep.Blobs, "bytes", rep.Bytes, "by", auth.FromContext(r.Context()).Name)
	s.json(w, http.StatusOK, rep)
}
