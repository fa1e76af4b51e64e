// Package server assembles bpfarm's server: the metadata database, the
// blob store (a local directory by default, S3 when configured), the
// signing key, the sandboxed compiler, the build workers, the intake and
// the HTTP API. The web UI is not its business: cmd/bpfarm builds it over
// the server's services and mounts it (Server.MountUI).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc/compile"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/fault"
	"github.com/bpfarm/bpfarm/server/gc"
	"github.com/bpfarm/bpfarm/server/httpapi"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/queue"
	"github.com/bpfarm/bpfarm/server/quota"
	"github.com/bpfarm/bpfarm/server/relocate"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/verify"
	bpfverify "github.com/bpfarm/bpfarm/verify"
)

// Config configures a server. The zero value of every field but Data has
// a sensible default.
type Config struct {
	Addr string // listen address, default 127.0.0.1:8080
	Data string // data directory
	// Database is the metadata database's URL: sqlite:PATH (the default,
	// sqlite:DATA/bpfarm.db) or postgres://... (a replica set's).
	Database string
	// Role is what this process does: RoleAll (default), RoleAPI or
	// RoleWorker.
	Role string
	// SecretKeyFile names the key file that seals the shared secrets (the
	// signing key, the first admin token) in the database; required with
	// PostgreSQL, default DATA/secret.key (created) with SQLite.
	SecretKeyFile string
	// BlobDir is the local blob directory when S3 is not configured
	// (default DATA/blobs); BlobDirShared declares that every replica of a
	// replica set mounts the same one.
	BlobDir       string
	BlobDirShared bool
	Workers       int // concurrent builds; default: number of cores
	S3            blob.S3Config
	AnonymousRead bool
	// CompileTimeout bounds one compile's wall time (default 60s).
	CompileTimeout time.Duration
	// NoPCH disables the precompiled vmlinux.h.
	NoPCH bool
	// DefaultKernels names each arch's reference kernel for CO-RE compiles
	// (arch → kernel id); an arch without one uses its newest kernel, and
	// x86_64 uses this host's BTF while the archive has no x86_64 kernel.
	DefaultKernels map[string]string
	// HostKernel imports the running kernel's BTF (and its modules') on
	// the first start with an empty archive, so that hosts like this one
	// get artifacts out of the box (`bpfarm serve` sets it unless
	// --no-host-kernel).
	HostKernel bool
	// Relocators is the number of concurrent relocations (default: cores).
	Relocators int
	// AgentBTFUpload lets agents (reader tokens) upload the BTF of their
	// registered host's kernel; kernel imports otherwise need admin.
	AgentBTFUpload bool
	Logger         *slog.Logger
	// Verify configures verification on real kernels (server/verify):
	// artifacts are booted in VMs on kernels that have an image.
	Verify VerifyConfig
	// Out receives the one-time start-up notice (URL, admin token).
	Out io.Writer
	// Listener, when set, is used instead of listening on Addr (tests).
	Listener net.Listener
	// MaxObjectSize bounds a compiled object (default
	// build.DefaultMaxObjectSize); clang may not write more either.
	MaxObjectSize int64
	// Quota holds the default per-token limits (zero fields: quota.Defaults).
	Quota api.Quota
	// GCInterval is how often garbage collection runs (default 6h;
	// negative: never, only on request).
	GCInterval time.Duration
	// GCGrace is how old an unnamed blob must be to be collected (default
	// gc.DefaultGrace).
	GCGrace time.Duration
	// BlobTimeout bounds each blob store call that is not a transfer
	// (default blob.DefaultCallTimeout); BlobIdleTimeout bounds the time a
	// transfer may go without progress (default blob.DefaultIdleTimeout).
	// A store that does not answer in time fails the call as unavailable.
	BlobTimeout, BlobIdleTimeout time.Duration
	// JobHook runs at the start of every build and relocation job (tests
	// inject panics with it).
	JobHook func(kind string, id int64)
	// Jobs holds the terms of the job queues' leases and retries (builds,
	// relocations, verifications); zero fields: queue's defaults.
	Jobs queue.Policy
}

// VerifyConfig configures verification on real kernels.
type VerifyConfig struct {
	// Runner is the static bpfarm-verifier binary; empty: found next to
	// the executable or on $PATH, else verification is off.
	Runner string
	// VMs is the number of VMs run at once (default 1); negative turns
	// verification off.
	VMs int
	// Timeout bounds one VM (default 60s under TCG, 30s under KVM).
	Timeout time.Duration
	// Accel is "kvm", "tcg" or "" (KVM when it works).
	Accel string
	// Memory is each VM's memory (default 512M).
	Memory string
}

// Server is a running bpfarm server.
type Server struct {
	cfg      Config
	DB       *store.DB
	Blobs    blob.Store
	Key      *signing.Key
	Compiler *compile.Compiler
	Archive  *archive.Archive
	Builds   *build.Service
	// Intake imports kernels and takes pushes for every door (API, UI,
	// first start).
	Intake   *intake.Service
	Relocate *relocate.Service
	Verify   *verify.Service
	Quotas   *quota.Service
	GC       *gc.Collector
	Registry *prometheus.Registry
	API      *httpapi.Server
}

// Open prepares everything Run needs: data directory, database, blob
// store, signing key, admin token, farm headers and compiler.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.Data == "" {
		cfg.Data = "data"
	}
	// The sandbox binds paths under Data: they must be absolute.
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	cfg.Data = data
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.MaxObjectSize <= 0 {
		cfg.MaxObjectSize = build.DefaultMaxObjectSize
	}
	if cfg.Role, err = checkRole(cfg.Role); err != nil {
		return nil, err
	}
	if cfg.BlobDir == "" {
		cfg.BlobDir = filepath.Join(cfg.Data, "blobs")
	}
	if cfg.Database == "" {
		cfg.Database = "sqlite:" + filepath.Join(cfg.Data, "bpfarm.db")
	}
	if err := checkBlobDir(cfg.Database, cfg.S3.Endpoint != "", cfg.BlobDirShared, cfg.BlobDir); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	s := &Server{cfg: cfg, Registry: prometheus.NewRegistry()}
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.Registry.MustRegister(queue.Collectors()...)

	if s.DB, err = store.Open(ctx, cfg.Database, store.WithLogger(log)); err != nil {
		return nil, err
	}
	s.Registry.MustRegister(s.DB.Collector())
	var backend blob.Store
	deadlines := blob.Deadlines{Call: cfg.BlobTimeout, Idle: cfg.BlobIdleTimeout}
	if cfg.S3.Endpoint != "" {
		// A bucket that does not answer is down, not slow.
		deadlines.Fault = fault.ErrStorageUnavailable
		openCtx, cancel := context.WithTimeout(ctx, 3*max(cfg.BlobTimeout, blob.DefaultCallTimeout))
		backend, err = blob.NewS3(openCtx, cfg.S3)
		cancel()
		if err != nil {
			s.DB.Close()
			return nil, err
		}
		log.Info("blob store: S3", "endpoint", cfg.S3.Endpoint, "bucket", cfg.S3.Bucket)
	} else {
		if backend, err = blob.NewLocal(cfg.BlobDir); err != nil {
			s.DB.Close()
			return nil, err
		}
		log.Info("blob store: local directory", "dir", cfg.BlobDir, "shared", cfg.BlobDirShared)
	}
	name := "local"
	if cfg.S3.Endpoint != "" {
		name = "s3"
	}
	s.Blobs = blob.WithMetrics(blob.Verifying(blob.WithDeadlines(backend, deadlines)), s.Registry, name)

	if err := s.openSecrets(ctx); err != nil {
		s.DB.Close()
		return nil, err
	}

	farm := filepath.Join(cfg.Data, "farm")
	hdrs, err := compile.PrepareHeaders(filepath.Join(farm, "include"))
	if err != nil {
		s.DB.Close()
		return nil, err
	}
	jobs := filepath.Join(cfg.Data, "jobs")
	if runsJobs(cfg.Role) {
		os.RemoveAll(jobs) // leftovers of a crash (an api process runs no jobs)
	}
	if err := os.MkdirAll(jobs, 0o700); err != nil {
		s.DB.Close()
		return nil, fmt.Errorf("job directory: %w", err)
	}
	tmp := filepath.Join(cfg.Data, "tmp")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		s.DB.Close()
		return nil, fmt.Errorf("temp directory: %w", err)
	}
	s.Archive, err = archive.New(archive.Config{DB: s.DB, Blobs: s.Blobs, Log: log,
		CacheDir: filepath.Join(farm, "kernels"), Defaults: cfg.DefaultKernels,
		Queued: func() { s.Relocate.Kick(); s.Verify.Kick() }})
	if err != nil {
		s.DB.Close()
		return nil, err
	}
	s.Compiler, err = compile.New(compile.Config{
		Headers:       hdrs,
		Vmlinux:       s.Archive.Provider(&compile.HostVmlinux{CacheDir: filepath.Join(farm, "vmlinux")}),
		WorkDir:       jobs,
		Timeout:       cfg.CompileTimeout,
		UsePCH:        !cfg.NoPCH,
		MaxOutput:     cfg.MaxObjectSize,
		MaxOutputName: "--max-object-size",
	})
	if err != nil {
		s.DB.Close()
		return nil, err
	}
	log.Info("compiler ready", "version", s.Compiler.Version())

	s.Quotas = quota.New(s.DB, cfg.Quota)
	s.GC = &gc.Collector{DB: s.DB, Blobs: s.Blobs, Quotas: s.Quotas, Grace: cfg.GCGrace, Log: log}
	// Builds, relocations and verifications wake each other's workers and
	// the long polls through the store (store.DB.Notify), across processes.
	s.Relocate = relocate.New(relocate.Config{DB: s.DB, Blobs: s.Blobs, Archive: s.Archive, Key: s.Key,
		Workers: cfg.Relocators, Policy: cfg.Jobs, Logger: log, Registry: s.Registry, JobHook: cfg.JobHook})
	s.Builds = build.New(build.Config{DB: s.DB, Blobs: s.Blobs, Compiler: s.Compiler, Workers: cfg.Workers,
		Logger: log, Registry: s.Registry, Archive: s.Archive, Policy: cfg.Jobs, Quotas: s.Quotas,
		MaxObjectSize: cfg.MaxObjectSize, JobHook: cfg.JobHook})
	if s.Verify, err = s.openVerify(); err != nil {
		s.DB.Close()
		return nil, err
	}
	s.Intake = intake.New(intake.Config{Archive: s.Archive, Builds: s.Builds, TempDir: tmp})
	if cfg.HostKernel {
		s.importHostKernel(ctx)
	}
	s.API = httpapi.New(httpapi.Config{DB: s.DB, Blobs: s.Blobs, Builds: s.Builds, Archive: s.Archive, Key: s.Key,
		Intake: s.Intake, Logger: log, Registry: s.Registry, AnonymousRead: cfg.AnonymousRead, TempDir: tmp,
		AgentBTFUpload: cfg.AgentBTFUpload, Verify: s.Verify, Quotas: s.Quotas, GC: s.GC.Run,
		HealthOnly: !servesAPI(cfg.Role)})
	return s, nil
}

// openVerify sets up verification on real kernels, or leaves it off
// (with a log line saying why) when there is no runner binary.
func (s *Server) openVerify() (*verify.Service, error) {
	vc := s.cfg.Verify
	runner := vc.Runner
	if vc.VMs >= 0 && runner == "" {
		var err error
		if runner, err = bpfverify.FindRunner(); err != nil {
			s.cfg.Logger.Info("verification on real kernels is off", "reason", err)
		}
	}
	if vc.VMs < 0 {
		runner = ""
	}
	return verify.New(verify.Config{DB: s.DB, Blobs: s.Blobs, Key: s.Key, Runner: runner, VMs: vc.VMs,
		Timeout: vc.Timeout, Memory: vc.Memory, Accel: vc.Accel, WorkDir: filepath.Join(s.cfg.Data, "verify"),
		Changed: s.Builds.Changed, Policy: s.cfg.Jobs, Logger: s.cfg.Logger, Registry: s.Registry})
}

// hostKernelMarker, under Data, records that the first start looked at
// the host kernel, so that an admin who empties the archive later does
// not see it come back.
const hostKernelMarker = "host-kernel.imported"

// importHostKernel imports the running kernel into an empty archive on the
// first start. A host without BTF (or any other failure) is logged, not
// fatal: the server runs without it.
func (s *Server) importHostKernel(ctx context.Context) {
	log := s.cfg.Logger
	marker := filepath.Join(s.cfg.Data, hostKernelMarker)
	if _, err := os.Stat(marker); err == nil {
		return
	}
	ks, err := s.DB.Kernels(ctx, "")
	if err != nil {
		log.Warn("host kernel not imported", "reason", err)
		return
	}
	if len(ks) > 0 {
		return
	}
	imp, err := s.Intake.ImportHost(ctx, archive.ImportOptions{By: "bpfarm serve (host kernel on first start)"})
	if err != nil {
		log.Warn("host kernel not imported (start with --no-host-kernel to silence this)", "reason", err)
		return
	}
	if err := os.WriteFile(marker, []byte(imp.Kernel.KID+"\n"), 0o644); err != nil {
		log.Warn("host kernel marker", "reason", err)
	}
	fmt.Fprintf(s.cfg.Out, "imported this host's kernel %s into the archive (--no-host-kernel turns this off)\n", imp.Kernel.KID)
}

// Settings returns the server's configuration, defaults filled in.
func (s *Server) Settings() Config { return s.cfg }

// TempDir is where uploads wait while they are read (DATA/tmp, emptied on
// every start).
func (s *Server) TempDir() string { return filepath.Join(s.cfg.Data, "tmp") }

// MountUI serves h (the web UI) at every path the API does not route.
// Call it before Run.
func (s *Server) MountUI(h http.Handler) { s.API.MountUI(h) }

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	defer s.DB.Close()
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s.API,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(s.API.StopLongPolls) // agents' desired-state long polls
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	workersDone := make(chan error, 1)
	relocateDone := make(chan struct{})
	verifyDone := make(chan error, 1)
	gcDone := make(chan struct{})
	if runsJobs(s.cfg.Role) {
		go func() { workersDone <- s.Builds.Run(workCtx) }()
		go func() { defer close(relocateDone); s.Relocate.Run(workCtx) }()
		go func() { verifyDone <- s.Verify.Run(workCtx) }()
		go func() {
			defer close(gcDone)
			switch iv := s.cfg.GCInterval; {
			case iv == 0:
				s.GC.Every(workCtx, 6*time.Hour)
			case iv > 0:
				s.GC.Every(workCtx, iv)
			}
		}()
	} else {
		workersDone <- nil
		close(relocateDone)
		verifyDone <- nil
		close(gcDone)
	}

	fmt.Fprintf(s.cfg.Out, "bpfarm serving on http://%s (role %s, data %s)\n", ln.Addr(), s.cfg.Role, s.cfg.Data)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-serveErr:
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	stopWork()
	<-workersDone
	<-relocateDone
	<-verifyDone
	<-gcDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
