package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/store"
)

// referenceKernel describes arch's reference kernel.
func (s *Server) referenceKernel(r *http.Request, arch string) (api.ReferenceKernel, error) {
	out := api.ReferenceKernel{Arch: arch}
	k, err := s.cfg.Archive.Default(r.Context(), arch)
	if errors.Is(err, store.ErrNotFound) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	out.Kernel, out.Pinned = k.KID, s.cfg.Archive.Pinned(r.Context(), arch)
	return out, nil
}

// listReferenceKernels lists each arch's reference kernel for CO-RE
// compiles.
func (s *Server) listReferenceKernels(w http.ResponseWriter, r *http.Request) {
	out := make([]api.ReferenceKernel, 0, len(api.Arches))
	for _, arch := range api.Arches {
		rk, err := s.referenceKernel(r, arch)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, rk)
	}
	s.json(w, http.StatusOK, out)
}

// archParam reads the {arch} path parameter; aliases (aarch64, amd64) are
// accepted.
func (s *Server) archParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	arch, err := kernel.NormalizeArch(chi.URLParam(r, "arch"))
	if err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return "", false
	}
	return arch, true
}

// pinReferenceKernel pins a kernel as its arch's reference kernel.
func (s *Server) pinReferenceKernel(w http.ResponseWriter, r *http.Request) {
	arch, ok := s.archParam(w, r)
	if !ok {
		return
	}
	var pin api.ReferencePin
	if err := jsonDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&pin); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("reference pin: %w", err))
		return
	}
	id, err := kernel.ParseID(pin.Kernel)
	if err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if id.Arch != arch {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("kernel %s is a %s kernel, not %s", id, id.Arch, arch))
		return
	}
	if _, err := s.cfg.Archive.PinReference(r.Context(), id.String(), auth.FromContext(r.Context()).Name); err != nil {
		s.fail(w, r, err)
		return
	}
	rk, err := s.referenceKernel(r, arch)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, rk)
}

// unpinReferenceKernel removes the pin: the arch's newest kernel is its
// reference again.
func (s *Server) unpinReferenceKernel(w http.ResponseWriter, r *http.Request) {
	arch, ok := s.archParam(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Archive.UnpinReference(r.Context(), arch); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
