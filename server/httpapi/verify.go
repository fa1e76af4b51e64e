package httpapi

// Verification on real kernels: kernel images, verifications, and the
// verification of each artifact in the artifact JSON.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/verify"
)

// maxImageUpload bounds a kernel image upload.
const maxImageUpload = 256 << 20

// putKernel serves PUT /api/v1/kernels/{kernel}/image: kernel ids hold
// slashes, so the router hands every PUT under /kernels/ here.
func (s *Server) putKernel(w http.ResponseWriter, r *http.Request) {
	p := kernelParam(r)
	kid, ok := strings.CutSuffix(p, "/image")
	if !ok {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("no route for PUT %s (want /api/v1/kernels/ID/image)", r.URL.Path))
		return
	}
	s.putKernelImage(w, r, kid)
}

// putKernelImage attaches a kernel image (vmlinuz, bzImage, Image) to a
// kernel of the archive, so that artifacts can be verified on it. When the
// image names its release (an x86 bzImage's header, else the banner in the
// decompressed kernel), it must be the kernel's.
func (s *Server) putKernelImage(w http.ResponseWriter, r *http.Request, kid string) {
	ctx := r.Context()
	k, err := s.cfg.DB.Kernel(ctx, kid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxImageUpload)
	tmp, err := os.CreateTemp(s.cfg.TempDir, "kernel-image-*")
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if n == 0 {
		s.error(w, r, http.StatusBadRequest, errors.New("kernel image: empty body"))
		return
	}
	release, err := imageRelease(ctx, tmp, s.cfg.TempDir)
	if err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("kernel image for %s: %s", kid, oneLine(strings.ReplaceAll(err.Error(), tmp.Name(), "upload"))))
		return
	}
	if release != "" && release != k.Release {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("kernel image for %s: the image is kernel release %s, not %s", kid, release, k.Release))
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		s.serverError(w, r, err)
		return
	}
	info, err := s.cfg.Blobs.Put(ctx, tmp, n, blob.Digest{})
	if err != nil {
		s.serverError(w, r, fmt.Errorf("store kernel image: %w", err))
		return
	}
	k, err = s.cfg.DB.SetKernelImage(ctx, kid, info.Digest.String(), info.Size)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("kernel image attached", "kernel", kid, "bytes", info.Size, "release_checked", release != "")
	if s.cfg.Verify != nil {
		s.cfg.Verify.Kick()
	}
	counts, _ := s.cfg.DB.ArtifactCounts(ctx)
	s.json(w, http.StatusOK, s.kernelJSON(k, s.defaults(ctx), counts))
}

// imageRelease reads the release of a kernel image: from an x86 bzImage's
// header, else from the banner of the decompressed kernel. It returns ""
// when the image is a kernel but names no release, and an error when it is
// not a kernel image.
func imageRelease(ctx context.Context, f *os.File, tempDir string) (string, error) {
	rel, err := verify.ImageRelease(f)
	if err == nil {
		return rel, nil
	}
	if !errors.Is(err, verify.ErrNoVersion) {
		return "", err
	}
	release := ""
	err = source.Import(ctx, f.Name(), source.Options{TempDir: tempDir}, func(k *source.Kernel) error {
		if k.Banner != nil {
			release = k.Banner.Release
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return release, nil
}

func (s *Server) listVerifications(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.VerificationFilter{Program: q.Get("program"), Revision: q.Get("revision"), Kernel: q.Get("kernel"),
		State: q.Get("state"), Result: q.Get("result")}
	f.Limit, _ = strconv.Atoi(q.Get("limit"))
	vs, err := s.cfg.DB.Verifications(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if vs == nil {
		vs = []api.Verification{}
	}
	s.json(w, http.StatusOK, vs)
}

func (s *Server) verificationID(w http.ResponseWriter, r *http.Request) (api.Verification, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("verification id %q: not a positive integer", chi.URLParam(r, "id")))
		return api.Verification{}, false
	}
	v, err := s.cfg.DB.Verification(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return v, false
	}
	return v, true
}

func (s *Server) getVerification(w http.ResponseWriter, r *http.Request) {
	if v, ok := s.verificationID(w, r); ok {
		s.json(w, http.StatusOK, v)
	}
}

// getVerificationConsole serves the VM's console output.
func (s *Server) getVerificationConsole(w http.ResponseWriter, r *http.Request) {
	v, ok := s.verificationID(w, r)
	if !ok {
		return
	}
	if v.ConsoleLog == nil {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("verification %d has no console log (state %s)", v.ID, v.State))
		return
	}
	s.serveBlob(w, r, v.ConsoleLog.Digest, "text/plain; charset=utf-8")
}

// verifyArtifact queues an artifact's verification again.
func (s *Server) verifyArtifact(w http.ResponseWriter, r *http.Request) {
	a, ok := s.artifactID(w, r)
	if !ok {
		return
	}
	if err := s.cfg.DB.RequeueVerification(r.Context(), a.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	if s.cfg.Verify != nil {
		s.cfg.Verify.Kick()
	}
	vs, err := s.cfg.DB.Verifications(r.Context(), store.VerificationFilter{ArtifactIDs: []int64{a.ID}})
	if err == nil && len(vs) == 0 {
		err = fmt.Errorf("verification of artifact %d: %w", a.ID, store.ErrNotFound)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusAccepted, vs[0])
}

// withVerification sets the artifacts' verifications; a failure only
// costs that information.
func (s *Server) withVerification(ctx context.Context, as ...*api.Artifact) {
	list := make([]api.Artifact, len(as))
	for i, a := range as {
		list[i] = *a
	}
	if err := s.cfg.DB.WithVerifications(ctx, list); err != nil {
		s.log.Warn("artifact verifications", "err", err)
		return
	}
	for i := range as {
		as[i].Verification = list[i].Verification
	}
}

// Verifier is what the API needs of the verification service.
type Verifier interface {
	// Kick makes it look for work now.
	Kick()
}
