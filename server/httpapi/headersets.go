package httpapi

import (
	"fmt"
	"mime"
	"net/http"

	"github.com/bpfarm/bpfarm/bpfsrc/headerset"
	"github.com/bpfarm/bpfarm/server/auth"
)

// importHeaderSet: POST /header-sets?name=NAME with a tar.gz of headers.
func (s *Server) importHeaderSet(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if err := headerset.ValidName(name); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/gzip", "application/x-gzip", "application/tar+gzip", "application/x-tar+gzip", "application/x-compressed-tar":
	default:
		s.error(w, r, http.StatusUnsupportedMediaType,
			fmt.Errorf("content type %q: send the headers as application/gzip (a tar.gz of *.h files)", ct))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, headerset.Limits.MaxTotalSize+1<<20)
	set, err := headerset.ReadTarGz(r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.cfg.Builds.ImportHeaderSet(r.Context(), name, set, auth.FromContext(r.Context()).Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
	}
	s.json(w, code, res)
}

// listHeaderSets: GET /header-sets.
func (s *Server) listHeaderSets(w http.ResponseWriter, r *http.Request) {
	sets, err := s.cfg.Builds.HeaderSets(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, sets)
}
