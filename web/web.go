// Package web is bpfarm's web UI, served by `bpfarm serve` at /. Pages are
// rendered on the server with html/template; the style sheet and a small
// script are embedded in the binary (nothing comes from a CDN), and every
// page works without the script.
//
// The UI has its own sign-in: a user pastes an API token once and gets a
// session (an opaque random id in an HttpOnly, SameSite=Strict cookie; the
// database keeps only its SHA-256, the token's id, role and expiry). Every
// form carries the session's synchronizer CSRF token, and unsafe requests
// must come from the UI's own origin. Pages read through the same store
// methods as the REST API, and import kernels and push revisions through
// the same intake (server/intake); the server does not import this
// package: cmd/bpfarm builds the UI over the server's services and mounts
// it.
package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

//go:embed templates/*.html static/*
var files embed.FS

// Config wires the UI to the server's parts.
type Config struct {
	DB    *store.DB
	Blobs blob.Store
	// Builds announces changes (live pages); nil turns them off.
	Builds *build.Service
	// Intake imports kernels and takes uploads; nil turns both off.
	Intake *intake.Service
	// Key is the server's signing key (artifact pages check signatures).
	Key    *signing.Key
	Logger *slog.Logger
	// AnonymousRead lets visitors who have not signed in read every page.
	AnonymousRead bool
	// TempDir holds uploaded kernels while they are imported (default:
	// os.TempDir()).
	TempDir string
	// SessionTTL is how long a session lives without use (default 12h);
	// sessions in use are extended up to MaxSessionAge (default 7 days).
	SessionTTL    time.Duration
	MaxSessionAge time.Duration
}

// UI is the web UI handler.
type UI struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static map[string]staticFile
}

type staticFile struct {
	data        []byte
	etag        string
	contentType string
}

// New returns the UI; mount it at /.
func New(cfg Config) *UI {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.MaxSessionAge <= 0 {
		cfg.MaxSessionAge = 7 * 24 * time.Hour
	}
	u := &UI{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), static: loadStatic()}
	u.pages = parsePages(u.funcs())
	u.routes()
	return u
}

func loadStatic() map[string]staticFile {
	out := map[string]staticFile{}
	entries, err := fs.ReadDir(files, "static")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		data, err := files.ReadFile("static/" + e.Name())
		if err != nil {
			panic(err)
		}
		h := sha256.Sum256(data)
		ct := "application/octet-stream"
		switch path.Ext(e.Name()) {
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		out[e.Name()] = staticFile{data: data, etag: hex.EncodeToString(h[:8]), contentType: ct}
	}
	return out
}

func (u *UI) routes() {
	m := u.mux
	m.HandleFunc("GET /static/{file}", u.serveStatic)
	m.HandleFunc("GET /signin", u.signinPage)
	m.HandleFunc("POST /signin", u.signin)
	m.HandleFunc("POST /signout", u.signout)

	m.Handle("GET /{$}", u.need(api.RoleReader, u.programsPage))
	m.Handle("GET /programs/{name}", u.need(api.RoleReader, u.programPage))
	m.Handle("GET /programs/{name}/diff", u.need(api.RoleReader, u.diffPage))
	m.Handle("GET /programs/{name}/source/{rev}", u.need(api.RoleReader, u.sourceDownload))
	m.Handle("GET /programs/{name}/events", u.need(api.RoleReader, u.programEvents))
	m.Handle("GET /builds/{id}", u.need(api.RoleReader, u.buildPage))
	m.Handle("GET /builds/{id}/events", u.need(api.RoleReader, u.buildEvents))
	m.Handle("GET /builds/{id}/log", u.need(api.RoleReader, u.buildLog))
	m.Handle("GET /builds/{id}/object", u.need(api.RoleReader, u.buildObject))
	m.Handle("GET /artifacts/{id}", u.need(api.RoleReader, u.artifactPage))
	m.Handle("GET /artifacts/{id}/files/{role}", u.need(api.RoleReader, u.artifactFile))
	m.Handle("GET /kernels", u.need(api.RoleReader, u.kernelsPage))
	m.Handle("GET /kernels/{kid...}", u.need(api.RoleReader, u.kernelPage))
	m.Handle("POST /kernels/import", u.need(api.RoleAdmin, u.importKernel))
	m.Handle("POST /kernels/import-host", u.need(api.RoleAdmin, u.importHostKernel))
	m.Handle("GET /hosts", u.need(api.RoleReader, u.hostsPage))
	m.Handle("GET /upload", u.need(api.RolePublisher, u.uploadPage))
	m.Handle("POST /upload", u.need(api.RolePublisher, u.upload))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("No page at %s.", r.URL.Path))
	})
}

// multipartRoutes may receive multipart forms; their handlers check the
// CSRF token as the form's first part (see readMultipart).
var multipartRoutes = map[string]bool{"/upload": true, "/kernels/import": true}

// ServeHTTP implements http.Handler.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")

	v, err := u.viewer(w, r)
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), viewerKey{}, v))
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := checkOrigin(r); err != nil {
			u.errorPage(w, r, http.StatusForbidden, err.Error())
			return
		}
		ct := r.Header.Get("Content-Type")
		switch {
		case strings.HasPrefix(ct, "multipart/form-data") && multipartRoutes[r.URL.Path]:
			// checked by readMultipart
		case strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil {
				u.errorPage(w, r, http.StatusBadRequest, "Unreadable form.")
				return
			}
			if !v.checkCSRF(r.PostForm.Get("csrf")) {
				u.csrfFailure(w, r)
				return
			}
		default:
			u.errorPage(w, r, http.StatusUnsupportedMediaType, "Forms only.")
			return
		}
	}
	u.mux.ServeHTTP(w, r)
}

// checkOrigin refuses a cross-site unsafe request: its Origin (or, when
// absent, its Referer) must name this host, and the browser must not
// label it cross-site.
func checkOrigin(r *http.Request) error {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" {
		return errors.New("Cross-site request refused.")
	}
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return nil // not a browser: the CSRF token still has to match
	}
	o, err := url.Parse(src)
	if err != nil || o.Host == "" || !strings.EqualFold(o.Host, r.Host) {
		return fmt.Errorf("Request from another origin (%s) refused.", oneLine(src))
	}
	return nil
}

func (u *UI) csrfFailure(w http.ResponseWriter, r *http.Request) {
	u.errorPage(w, r, http.StatusForbidden,
		"The form's security token does not match your session (it may have expired, or you signed in again elsewhere). Reload the page and try again.")
}

// need wraps a handler that needs role: visitors who have not signed in
// are sent to the sign-in page, others lacking the role get 403.
func (u *UI) need(role string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := viewerOf(r)
		switch {
		case v.can(role):
			h(w, r)
		case v.Role == "" || (v.Anonymous && role != api.RoleReader):
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") {
				q := url.Values{"next": {r.URL.RequestURI()}}
				if v.ended {
					q.Set("ended", "1")
				}
				http.Redirect(w, r, "/signin?"+q.Encode(), http.StatusSeeOther)
				return
			}
			u.errorPage(w, r, http.StatusUnauthorized, "Sign in first.")
		default:
			u.errorPage(w, r, http.StatusForbidden,
				fmt.Sprintf("Your token %q has role %s; this needs %s.", v.Name, v.Role, role))
		}
	})
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := u.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	etag := `"` + f.etag + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", f.contentType)
	if r.URL.Query().Get("v") == f.etag {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(f.data)
}

// page is what every template gets.
type page struct {
	Title  string
	Active string // nav item
	V      viewer
	// Live makes the page follow changes: "build" streams a build's
	// progress, "reload" reloads the page when Events says so.
	Live   string
	Events string
	Data   any
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// render executes a page template into a buffer, then writes it, so that
// a template error answers 500 rather than half a page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	t, ok := u.pages[name]
	if !ok {
		u.serverError(w, r, fmt.Errorf("no template %s", name))
		return
	}
	p.V = viewerOf(r)
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() < 4<<20 {
			bufPool.Put(buf)
		}
	}()
	if err := t.ExecuteTemplate(buf, "layout", p); err != nil {
		u.serverError(w, r, fmt.Errorf("render %s: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

type errorData struct {
	Code    int
	Status  string
	Message string
}

func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	u.render(w, r, code, "error.html", page{Title: http.StatusText(code),
		Data: errorData{Code: code, Status: http.StatusText(code), Message: msg}})
}

// serverError answers an unexpected error: 503 naming the cause, with
// Retry-After, for an infrastructure fault that should pass (storage,
// disk, database: see server/fault), else 500 without internals.
func (u *UI) serverError(w http.ResponseWriter, r *http.Request, err error) {
	code, status := http.StatusInternalServerError, "Internal error"
	msg := "Something went wrong on the server; the error is in its log."
	if fault.Temporary(err) {
		code, status = http.StatusServiceUnavailable, "Service unavailable"
		msg = capitalize(fault.Cause(err)) + ". Try again in a moment."
		w.Header().Set("Retry-After", retryAfter)
		u.log.Error("ui: unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		u.log.Error("ui: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if _, ok := u.pages["error.html"]; !ok {
		http.Error(w, msg, code)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	t := u.pages["error.html"]
	var buf bytes.Buffer
	if t.ExecuteTemplate(&buf, "layout", page{Title: status, V: viewerOf(r),
		Data: errorData{Code: code, Status: status, Message: msg}}) != nil {
		http.Error(w, msg, code)
		return
	}
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// retryAfter is the Retry-After of 503 answers, in seconds.
const retryAfter = "10"

// fail answers an error from the store or a service: 404 for what does not
// exist, 400 for bad input, else 500.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		inv  *build.InputError
		ainp *archive.InputError
	)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		u.errorPage(w, r, http.StatusNotFound, capitalize(oneLine(err.Error()))+".")
	case errors.As(err, &inv), errors.As(err, &ainp):
		u.errorPage(w, r, http.StatusBadRequest, capitalize(oneLine(err.Error()))+".")
	case errors.Is(err, context.Canceled):
		w.WriteHeader(499)
	default:
		u.serverError(w, r, err)
	}
}

func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
