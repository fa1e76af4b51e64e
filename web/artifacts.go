package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
)

// maxManifest bounds a manifest read for display.
const maxManifest = 16 << 20

type artifactFile struct {
	Role   string
	Label  string
	Name   string
	SHA256 string
	Size   int64
}

type artifactData struct {
	Artifact api.Artifact
	Kernel   *store.Kernel
	Manifest *manifest.Manifest
	Pretty   string // the manifest, indented
	Files    []artifactFile
	// Signature check against this server's key: "valid", "invalid: ..." or
	// "unsigned".
	SignatureCheck string
	KeyID          string
	MinBTF         int64 // minimized BTF size
	FullBTF        int64 // the kernel's BTF size
	ManifestError  string
	// Verification is the artifact's verification on its booted kernel,
	// when the server verifies.
	Verification *api.Verification
}

var fileLabels = map[string]string{
	manifest.FileObject:    "CO-RE object (as compiled)",
	manifest.FileMinBTF:    "Minimized BTF",
	manifest.FileRelocated: "Pre-relocated object",
	"manifest":             "Signed manifest",
}

func (u *UI) loadArtifact(w http.ResponseWriter, r *http.Request) (api.Artifact, bool) {
	id, ok := u.pathID(w, r)
	if !ok {
		return api.Artifact{}, false
	}
	a, err := u.cfg.DB.Artifact(r.Context(), id)
	if err != nil {
		u.fail(w, r, err)
		return a, false
	}
	return a, true
}

// readManifest reads an artifact's manifest, leniently (fields newer than
// this server are kept in the pretty text, not refused).
func (u *UI) readManifest(r *http.Request, a api.Artifact) (*manifest.Manifest, []byte, error) {
	if a.Manifest == nil {
		return nil, nil, nil
	}
	d, err := blob.ParseDigest(a.Manifest.Digest)
	if err != nil {
		return nil, nil, err
	}
	raw, err := blob.ReadAll(r.Context(), u.cfg.Blobs, d, maxManifest)
	if err != nil {
		return nil, nil, err
	}
	var m manifest.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, raw, fmt.Errorf("manifest of artifact %d: %w", a.ID, err)
	}
	return &m, raw, nil
}

func (u *UI) artifactPage(w http.ResponseWriter, r *http.Request) {
	a, ok := u.loadArtifact(w, r)
	if !ok {
		return
	}
	d := artifactData{Artifact: a}
	if k, err := u.cfg.DB.Kernel(r.Context(), a.Kernel); err == nil {
		d.Kernel = &k
		d.FullBTF = k.BTFSize
	}
	if a.MinBTF != nil {
		d.MinBTF = a.MinBTF.Size
	}
	if u.cfg.Key != nil {
		d.KeyID = u.cfg.Key.Describe().KeyID
	}
	vs, err := u.cfg.DB.Verifications(r.Context(), store.VerificationFilter{ArtifactIDs: []int64{a.ID}})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if len(vs) > 0 {
		d.Verification = &vs[0]
	}
	m, raw, err := u.readManifest(r, a)
	if err != nil {
		// The page still shows what the database knows.
		u.log.Warn("ui: read manifest", "artifact", a.ID, "err", err)
		d.ManifestError = capitalize(oneLine(err.Error())) + "."
	}
	if raw != nil {
		var pretty bytes.Buffer
		if json.Indent(&pretty, raw, "", "  ") == nil {
			d.Pretty = pretty.String()
		} else {
			d.Pretty = string(raw)
		}
	}
	if m != nil {
		d.Manifest = m
		for _, role := range []string{manifest.FileObject, manifest.FileMinBTF, manifest.FileRelocated} {
			if f, ok := m.Files[role]; ok {
				d.Files = append(d.Files, artifactFile{Role: role, Label: fileLabels[role], Name: f.Name, SHA256: f.SHA256, Size: f.Size})
			}
		}
		d.Files = append(d.Files, artifactFile{Role: "manifest", Label: fileLabels["manifest"], Name: manifestName(a),
			SHA256: a.Manifest.Digest, Size: int64(len(raw))})
		switch {
		case m.Signature == nil:
			d.SignatureCheck = "unsigned"
		case u.cfg.Key == nil:
			d.SignatureCheck = "unchecked"
		default:
			if err := m.Verify(u.cfg.Key.Public()); err != nil {
				d.SignatureCheck = "invalid: " + err.Error()
			} else {
				d.SignatureCheck = "valid"
			}
		}
	}
	u.render(w, r, http.StatusOK, "artifact.html", page{Title: fmt.Sprintf("Artifact %d · %s", a.ID, a.Program),
		Active: "programs", Data: d})
}

func manifestName(a api.Artifact) string {
	return fmt.Sprintf("%s-%s.manifest.json", a.Program, strings.ReplaceAll(a.Kernel, "/", "_"))
}

// artifactFile streams one file of an artifact under the session's
// authority (the REST blob URLs need a token header a link cannot send).
func (u *UI) artifactFile(w http.ResponseWriter, r *http.Request) {
	a, ok := u.loadArtifact(w, r)
	if !ok {
		return
	}
	// The files of an artifact relocated for an unverified kernel (BTF a
	// host uploaded) go only to that host (through the API) and admins.
	if k, err := u.cfg.DB.Kernel(r.Context(), a.Kernel); err == nil && k.Unverified() && !viewerOf(r).can(api.RoleAdmin) {
		u.errorPage(w, r, http.StatusForbidden, fmt.Sprintf("Kernel %s is unverified (host %s uploaded its BTF): "+
			"its artifacts go only to that host until an admin approves it.", k.KID, k.SourceHost))
		return
	}
	role := r.PathValue("role")
	if role == "manifest" {
		if a.Manifest == nil {
			u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Artifact %d has no manifest (it is %s).", a.ID, a.State))
			return
		}
		u.serveBlob(w, r, a.Manifest.Digest, "application/json", manifestName(a), true)
		return
	}
	m, _, err := u.readManifest(r, a)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if m == nil {
		u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Artifact %d has no files yet (it is %s).", a.ID, a.State))
		return
	}
	f, ok := m.Files[role]
	if !ok {
		u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Artifact %d has no %q file.", a.ID, role))
		return
	}
	ct := "application/octet-stream"
	if strings.HasSuffix(f.Name, ".o") {
		ct = "application/x-elf"
	}
	u.serveBlob(w, r, f.SHA256, ct, f.Name, true)
}

// serveBlob streams a blob with its digest as a strong ETag, as a download
// (attachment) or inline.
func (u *UI) serveBlob(w http.ResponseWriter, r *http.Request, digest, contentType, filename string, attachment bool) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	etag := `"sha256:` + d.String() + `"`
	if r.Header.Get("If-None-Match") == etag {
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	info, err := u.cfg.Blobs.Stat(r.Context(), d)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	rc, err := u.cfg.Blobs.Get(r.Context(), d)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	defer rc.Close()
	disp := "inline"
	if attachment {
		disp = "attachment"
	}
	h := w.Header()
	h.Set("Content-Disposition", mime.FormatMediaType(disp, map[string]string{"filename": safeFilename(filename)}))
	h.Set("Content-Type", contentType)
	h.Set("ETag", etag)
	h.Set("X-Content-Sha256", d.String())
	h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, rc); err != nil && !errors.Is(err, r.Context().Err()) {
		u.log.Warn("ui: stream blob", "digest", d, "err", err)
	}
}

// safeFilename keeps a download name to one path element of printable
// characters.
func safeFilename(s string) string {
	s = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '"' {
			return '_'
		}
		return c
	}, s)
	if s == "" || s == "." || s == ".." {
		return "download"
	}
	return s
}
