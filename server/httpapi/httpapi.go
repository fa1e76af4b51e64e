// Package httpapi is bpfarm's REST API under /api/v1, plus /healthz,
// /readyz and /metrics, and whatever handler is mounted at / (the web UI,
// which cmd/bpfarm mounts: see Server.MountUI). Every error is answered as
// JSON {"error": "..."}, one line, with the right status.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/headerset"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/quota"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

// Config wires the API to the server's parts.
type Config struct {
	DB      *store.DB
	Blobs   blob.Store
	Builds  *build.Service
	Archive *archive.Archive
	// Intake imports kernels and takes pushes, as the web UI does.
	Intake *intake.Service
	// TempDir holds uploads while they are imported.
	TempDir  string
	Key      *signing.Key
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// AnonymousRead lets requests without a token read (never write).
	AnonymousRead bool
	// MaxBundleBytes bounds a push's request body (default 8 MiB + 1 MiB of
	// multipart/tar overhead).
	MaxBundleBytes int64
	// Ready reports whether the server can take work (for /readyz).
	Ready func(context.Context) error
	// AgentBTFUpload lets reader tokens (agents) import their own host's
	// kernel BTF (see requireKernelImport); otherwise imports need admin.
	AgentBTFUpload bool
	// Verify is the verification service, told when a kernel gets an
	// image or an artifact is queued for verification again (may be nil).
	Verify Verifier
	// Quotas reports and enforces per-token limits (nil: the defaults,
	// not enforced).
	Quotas *quota.Service
	// HealthOnly serves only /healthz, /readyz and /metrics (a worker
	// process, `bpfarm serve --role worker`).
	HealthOnly bool
	// GC runs a garbage collection (POST /gc); nil answers 503.
	GC func(ctx context.Context, dryRun bool) (api.GCReport, error)
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	latency *prometheus.HistogramVec
	router  chi.Router
	hosts   *hostsState
}

// New builds the router.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Quotas == nil {
		cfg.Quotas = quota.New(cfg.DB, api.Quota{})
	}
	if cfg.MaxBundleBytes == 0 {
		cfg.MaxBundleBytes = bpfsrc.DefaultLimits.MaxTotalSize + 1<<20
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bpfarm_http_request_duration_seconds",
		Help:    "HTTP request latency by method, route pattern and status code.",
		Buckets: prometheus.DefBuckets,
	}, []string{"method", "route", "code"})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.latency)
	}
	s.hosts = newHostsState(cfg.Registry)
	s.router = s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// Router returns the chi router (the OpenAPI test walks it).
func (s *Server) Router() chi.Router { return s.router }

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(middleware.RequestID, s.recoverer, s.observe, s.authenticate)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", s.readyz)
	if s.cfg.Registry != nil {
		r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("no route for %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path))
	})
	if s.cfg.HealthOnly {
		return r
	}
	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/openapi.json", s.openapi)
		r.Get("/signing-key", s.signingKey)
		r.With(s.require(api.RoleReader)).Get("/whoami", s.whoami)

		r.With(s.require(api.RoleReader)).Get("/programs", s.listPrograms)
		r.With(s.require(api.RoleReader)).Get("/programs/{name}", s.getProgram)
		r.With(s.require(api.RolePublisher)).Post("/programs/{name}/revisions", s.push)
		r.With(s.require(api.RoleReader)).Get("/programs/{name}/revisions/{revision}/source", s.getSource)

		r.With(s.require(api.RoleReader)).Get("/builds", s.listBuilds)
		r.With(s.require(api.RoleReader)).Get("/builds/{id}", s.getBuild)
		r.With(s.require(api.RoleReader)).Get("/builds/{id}/log", s.getBuildLog)
		r.With(s.require(api.RoleReader)).Get("/builds/{id}/object", s.getBuildObject)
		r.With(s.require(api.RoleReader)).Get("/blobs/{digest}", s.getBlob)

		r.With(s.require(api.RoleReader)).Get("/header-sets", s.listHeaderSets)
		r.With(s.require(api.RoleAdmin)).Post("/header-sets", s.importHeaderSet)

		r.With(s.require(api.RoleReader)).Get("/reference-kernels", s.listReferenceKernels)
		r.With(s.require(api.RoleAdmin)).Put("/reference-kernels/{arch}", s.pinReferenceKernel)
		r.With(s.require(api.RoleAdmin)).Delete("/reference-kernels/{arch}", s.unpinReferenceKernel)
		r.With(s.require(api.RoleReader)).Get("/kernels", s.listKernels)
		r.With(s.requireKernelImport).Post("/kernels", s.importKernels)
		r.With(s.require(api.RoleReader)).Get("/kernels/*", s.getKernel)
		r.With(s.require(api.RoleAdmin)).Delete("/kernels/*", s.deleteKernel)
		// Verification on real kernels (verify.go). PUT /kernels/{kernel}/image:
		// kernel ids hold slashes, so the wildcard takes every PUT.
		r.With(s.require(api.RoleAdmin)).Put("/kernels/*", s.putKernel)
		// POST /kernels/{kernel}/approve (trust.go).
		r.With(s.require(api.RoleAdmin)).Post("/kernels/*", s.postKernel)
		r.With(s.require(api.RoleReader)).Get("/verifications", s.listVerifications)
		r.With(s.require(api.RoleReader)).Get("/verifications/{id}", s.getVerification)
		r.With(s.require(api.RoleReader)).Get("/verifications/{id}/console", s.getVerificationConsole)
		r.With(s.require(api.RolePublisher)).Post("/artifacts/{id}/verify", s.verifyArtifact)

		r.With(s.require(api.RoleReader)).Get("/artifacts", s.listArtifacts)
		r.With(s.require(api.RoleReader)).Get("/artifacts/{id}", s.getArtifact)
		r.With(s.require(api.RoleReader)).Get("/artifacts/{id}/manifest", s.getArtifactManifest)
		r.With(s.require(api.RoleReader)).Get("/programs/{name}/artifact", s.resolve)

		r.With(s.require(api.RoleReader)).Post("/hosts/register", s.registerHost)
		r.With(s.require(api.RoleReader)).Get("/hosts", s.listHosts)
		r.With(s.require(api.RoleReader)).Get("/hosts/{name}", s.getHost)
		r.With(s.require(api.RoleAdmin)).Post("/hosts/{name}/enroll", s.enrollHost)
		r.With(s.require(api.RoleReader)).Post("/hosts/{name}/report", s.reportHost)
		r.With(s.require(api.RoleReader)).Get("/hosts/{name}/desired", s.desiredState)
		r.With(s.require(api.RoleReader)).Get("/assignments", s.listAssignments)
		r.With(s.require(api.RolePublisher)).Post("/assignments", s.createAssignment)
		r.With(s.require(api.RolePublisher)).Delete("/assignments/{id}", s.deleteAssignment)

		r.With(s.require(api.RoleAdmin)).Get("/tokens", s.listTokens)
		r.With(s.require(api.RoleAdmin)).Post("/tokens", s.createToken)
		r.With(s.require(api.RoleAdmin)).Delete("/tokens/{name}", s.revokeToken)
		r.With(s.require(api.RoleAdmin)).Get("/tokens/{name}/quota", s.getQuota)
		r.With(s.require(api.RoleAdmin)).Put("/tokens/{name}/quota", s.putQuota)
		r.With(s.require(api.RoleReader)).Get("/quota", s.ownQuota)
		r.With(s.require(api.RoleAdmin)).Post("/gc", s.gc)
	})
	return r
}

// MountUI serves h at / (the web UI): every path the API does not route.
// Call it before serving. A HealthOnly server mounts nothing.
func (s *Server) MountUI(h http.Handler) {
	if !s.cfg.HealthOnly {
		s.router.Mount("/", h)
	}
}

// statusWriter records the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		d := time.Since(start)
		s.latency.WithLabelValues(r.Method, route, strconv.Itoa(sw.code)).Observe(d.Seconds())
		level := slog.LevelDebug
		if sw.code >= 500 {
			level = slog.LevelWarn
		} else if r.Method != http.MethodGet && r.Method != http.MethodHead {
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "http", "method", r.Method, "path", r.URL.Path, "route", route,
			"status", sw.code, "duration", d, "principal", auth.FromContext(r.Context()).Name,
			"request_id", middleware.GetReqID(r.Context()))
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "panic", v, "path", r.URL.Path, "stack", string(debugStack()))
				s.error(w, r, http.StatusInternalServerError, errors.New("internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// authenticate resolves the bearer token, if any, into the request's
// principal. A token that is present but invalid is refused outright.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok, err := auth.BearerToken(r)
		if err != nil {
			s.error(w, r, http.StatusUnauthorized, err)
			return
		}
		if !ok {
			if s.cfg.AnonymousRead {
				r = r.WithContext(auth.WithPrincipal(r.Context(), auth.Principal{Name: "anonymous", Role: api.RoleReader, Anonymous: true}))
			}
			next.ServeHTTP(w, r)
			return
		}
		p, err := auth.Authenticate(r.Context(), s.cfg.DB, secret)
		if err != nil {
			if errors.Is(err, auth.ErrUnknownToken) {
				s.error(w, r, http.StatusUnauthorized, err)
			} else {
				s.serverError(w, r, err)
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}

// require refuses requests whose principal lacks role.
func (s *Server) require(role string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := auth.FromContext(r.Context())
			switch {
			case p.Role == "":
				s.error(w, r, http.StatusUnauthorized, errors.New("authentication required: pass a token (Authorization: Bearer <token>, or --token / BPFARM_TOKEN)"))
			case p.Anonymous && role != api.RoleReader:
				s.error(w, r, http.StatusUnauthorized, fmt.Errorf("authentication required: this needs a %s token", role))
			case !auth.Allows(p.Role, role):
				s.error(w, r, http.StatusForbidden, fmt.Errorf("token %q has role %s; this needs %s", p.Name, p.Role, role))
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

// readyTimeout bounds each check of /readyz.
const readyTimeout = 3 * time.Second

// readyz answers 200 when the database and the blob store answer (and
// Config.Ready agrees), else 503 with the cause.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.ready(r.Context()); err != nil {
		w.Header().Set("Retry-After", retryAfter)
		s.error(w, r, http.StatusServiceUnavailable, fmt.Errorf("not ready: %w", err))
		return
	}
	w.Write([]byte("ready\n"))
}

func (s *Server) ready(parent context.Context) error {
	check := func(sentinel error, f func(context.Context) error) error {
		ctx, cancel := context.WithTimeout(parent, readyTimeout)
		defer cancel()
		err := f(ctx)
		if err != nil && ctx.Err() != nil && parent.Err() == nil {
			return fault.Wrap(sentinel, fmt.Errorf("no answer within %s", readyTimeout))
		}
		return fault.Wrap(sentinel, err)
	}
	if err := check(fault.ErrDatabaseUnavailable, s.cfg.DB.Ping); err != nil {
		return err
	}
	if s.cfg.Blobs != nil {
		if err := check(fault.ErrStorageUnavailable, s.cfg.Blobs.Check); err != nil {
			return err
		}
	}
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(parent, readyTimeout)
		defer cancel()
		return s.cfg.Ready(ctx)
	}
	return nil
}

func (s *Server) signingKey(w http.ResponseWriter, r *http.Request) {
	s.json(w, http.StatusOK, s.cfg.Key.Describe())
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	s.json(w, http.StatusOK, api.Whoami{Name: p.Name, Role: p.Role, Anonymous: p.Anonymous, Host: p.Host})
}

func (s *Server) json(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.log.Debug("write response", "err", err)
	}
}

func (s *Server) error(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	s.json(w, code, api.Error{Error: oneLine(err.Error())})
}

// retryAfter is the Retry-After of 503 answers, in seconds.
const retryAfter = "10"

// serverError answers an unexpected error without exposing internals: 503
// with the cause line (e.g. "object storage unreachable") and Retry-After
// for an infrastructure fault that should pass (server/fault), else 500.
func (s *Server) serverError(w http.ResponseWriter, r *http.Request, err error) {
	id := middleware.GetReqID(r.Context())
	if fault.Temporary(err) {
		s.log.Error("unavailable", "method", r.Method, "path", r.URL.Path, "err", err, "request_id", id)
		w.Header().Set("Retry-After", retryAfter)
		s.json(w, http.StatusServiceUnavailable, api.Error{Error: fault.Cause(err) + " (request " + id + ")"})
		return
	}
	s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err, "request_id", id)
	s.json(w, http.StatusInternalServerError, api.Error{Error: "internal error (request " + id + ")"})
}

// fail maps an error to its status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		inv   *bpfsrc.InvalidError
		hinv  *headerset.InvalidError
		input *build.InputError
		ainp  *archive.InputError
		mbe   *http.MaxBytesError
		qe    *quota.Error
	)
	switch {
	case errors.As(err, &qe) && qe.Limit == quota.LimitBuildsPerHour:
		w.Header().Set("Retry-After", "600")
		s.error(w, r, http.StatusTooManyRequests, qe)
	case errors.As(err, &qe):
		s.error(w, r, http.StatusRequestEntityTooLarge, qe)
	case errors.As(err, &mbe):
		s.error(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", mbe.Limit))
	case errors.Is(err, store.ErrConflict):
		s.error(w, r, http.StatusConflict, err)
	case errors.As(err, &inv), errors.As(err, &hinv), errors.As(err, &input), errors.As(err, &ainp), errors.Is(err, store.ErrInvalid):
		s.error(w, r, http.StatusBadRequest, err)
	case errors.Is(err, store.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		s.error(w, r, http.StatusNotFound, err)
	case errors.Is(err, context.Canceled):
		s.error(w, r, 499, err)
	default:
		s.serverError(w, r, err)
	}
}

func oneLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return s[:i]
		}
	}
	return s
}
