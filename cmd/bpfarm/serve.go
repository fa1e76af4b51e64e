package main

import (
	"errors"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/internal/cli"
	"github.com/bpfarm/bpfarm/server"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/quota"
	"github.com/bpfarm/bpfarm/web"
)

// mountUI builds the web UI over the server's services and mounts it at /:
// the server itself does not know the UI.
func mountUI(s *server.Server) {
	cfg := s.Settings()
	s.MountUI(web.New(web.Config{DB: s.DB, Blobs: s.Blobs, Builds: s.Builds, Intake: s.Intake, Key: s.Key,
		Logger: cfg.Logger, AnonymousRead: cfg.AnonymousRead, TempDir: s.TempDir()}))
}

func newServe() *cobra.Command {
	var (
		cfg      server.Config
		logLevel string
		logJSON  bool
		// noHostKernel keeps the archive empty on first start.
		noHostKernel bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the bpfarm server",
		Long: `Run the bpfarm server. With no S3 flags it runs on the embedded default:
SQLite and a content-addressed blob directory under --data. With them, every
blob lives in that bucket. Every flag can also be set as BPFARM_<FLAG>, e.g.
BPFARM_S3_ENDPOINT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level %q: want debug, info, warn or error", logLevel)
			}
			opts := &slog.HandlerOptions{Level: lvl}
			var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
			if logJSON {
				h = slog.NewJSONHandler(os.Stderr, opts)
			}
			cfg.Logger = slog.New(h)
			slog.SetDefault(cfg.Logger)
			if (cfg.S3.Endpoint == "") != (cfg.S3.Bucket == "") {
				return usagef("--s3-endpoint and --s3-bucket go together")
			}
			cfg.HostKernel = !noHostKernel
			s, err := server.Open(cmd.Context(), cfg)
			if errors.Is(err, server.ErrConfig) {
				return cli.Usage(err)
			}
			if err != nil {
				return err
			}
			mountUI(s)
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address")
	f.StringVar(&cfg.Data, "data", "./data", "data directory (database, blobs, keys, farm headers)")
	f.StringVar(&cfg.Database, "database", "",
		"metadata database: sqlite:PATH, or postgres://USER@HOST:PORT/DB?sslmode=... shared by a replica set (password from PGPASSWORD or ~/.pgpass rather than the URL) (default sqlite:DATA/bpfarm.db)")
	f.StringVar(&cfg.Role, "role", server.RoleAll,
		"what this process does: all; api (HTTP API and UI, no jobs); worker (builds, relocations, verifications, gc; serves only /healthz, /readyz and /metrics)")
	f.StringVar(&cfg.SecretKeyFile, "secret-key-file", "",
		"file whose key (32+ bytes, base64 or raw) seals the signing key and first admin token in the database; the same on every replica; required with PostgreSQL (default with SQLite: DATA/secret.key, created)")
	f.StringVar(&cfg.BlobDir, "blob-dir", "", "local blob directory when S3 is not configured (default DATA/blobs)")
	f.BoolVar(&cfg.BlobDirShared, "blob-dir-shared", false,
		"declare --blob-dir shared by every replica (one network file system); a PostgreSQL replica set refuses a local directory otherwise")
	f.IntVar(&cfg.Workers, "workers", runtime.NumCPU(), "concurrent builds")
	f.StringVar(&cfg.S3.Endpoint, "s3-endpoint", "", "S3 endpoint HOST:PORT (enables S3 blob storage)")
	f.StringVar(&cfg.S3.Bucket, "s3-bucket", "", "S3 bucket")
	f.StringVar(&cfg.S3.AccessKey, "s3-access-key", "", "S3 access key")
	f.StringVar(&cfg.S3.SecretKey, "s3-secret-key", "", "S3 secret key")
	f.BoolVar(&cfg.S3.Insecure, "s3-insecure", false, "talk to S3 over plain HTTP")
	f.DurationVar(&cfg.BlobTimeout, "blob-timeout", blob.DefaultCallTimeout,
		"deadline of each blob store call that is not a transfer (a store that does not answer fails it: 503 object storage unreachable)")
	f.DurationVar(&cfg.BlobIdleTimeout, "blob-idle-timeout", blob.DefaultIdleTimeout,
		"longest a blob transfer may go without progress from the store")
	f.BoolVar(&cfg.AnonymousRead, "anonymous-read", false, "allow reads without a token")
	f.DurationVar(&cfg.CompileTimeout, "compile-timeout", 60*time.Second, "wall-clock limit of one compile")
	f.BoolVar(&cfg.NoPCH, "no-pch", false, "do not use the precompiled vmlinux.h")
	f.StringToStringVar(&cfg.DefaultKernels, "default-kernel", nil,
		"reference kernel per arch for CO-RE compiles, ARCH=DISTRO/VERSION/ARCH/RELEASE (default: the arch's newest kernel)")
	f.BoolVar(&noHostKernel, "no-host-kernel", false,
		"do not import this host's kernel into the archive on the first start with an empty archive")
	f.IntVar(&cfg.Relocators, "relocators", runtime.NumCPU(), "concurrent per-kernel relocations")
	f.BoolVar(&cfg.AgentBTFUpload, "agent-btf-upload", false,
		"let agents (host tokens) upload their registered host's kernel BTF, stored unverified, so that artifacts get relocated for it")
	f.Int64Var(&cfg.MaxObjectSize, "max-object-size", build.DefaultMaxObjectSize, "largest compiled object stored, in bytes")
	f.Int64Var(&cfg.Quota.MaxBytes, "quota-max-bytes", quota.Defaults.MaxBytes,
		"default per-token limit of bytes stored (bundles, objects, artifacts)")
	f.Int64Var(&cfg.Quota.MaxRevisions, "quota-max-revisions", quota.Defaults.MaxRevisions,
		"default per-token number of revisions kept per program (gc deletes older ones)")
	f.Int64Var(&cfg.Quota.MaxBuildsPerHour, "quota-max-builds-per-hour", quota.Defaults.MaxBuildsPerHour,
		"default per-token limit of builds queued per hour")
	f.DurationVar(&cfg.GCInterval, "gc-interval", 6*time.Hour, "how often garbage collection runs (negative: never)")
	f.StringVar(&cfg.Verify.Runner, "verifier", "",
		"static bpfarm-verifier binary that verifies artifacts on real kernels in VMs (default: next to this executable, or on $PATH; none: verification is off)")
	f.IntVar(&cfg.Verify.VMs, "verify-vms", max(1, runtime.NumCPU()/2),
		"verification VMs run at once (-1: no verification); each keeps about one core busy without KVM")
	f.DurationVar(&cfg.Verify.Timeout, "verify-timeout", 0, "wall-clock limit of one verification VM (default 60s, 30s with KVM)")
	f.StringVar(&cfg.Verify.Accel, "verify-accel", "", "VM accelerator: kvm or tcg (default: kvm when it works)")
	f.StringVar(&cfg.Verify.Memory, "verify-memory", "512M", "memory of each verification VM")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON lines")
	return cmd
}
