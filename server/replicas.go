package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/secret"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

// Roles of a server process (Config.Role, `bpfarm serve --role`).
const (
	// RoleAll serves the HTTP API and the UI and runs jobs: one process
	// does everything (the default).
	RoleAll = "all"
	// RoleAPI serves the HTTP API and the UI and runs no jobs (no build,
	// relocation or verification workers, no periodic garbage collection).
	RoleAPI = "api"
	// RoleWorker runs jobs and serves only /healthz, /readyz and /metrics.
	RoleWorker = "worker"
)

// ErrConfig is wrapped by every refusal of a configuration (a usage error).
var ErrConfig = errors.New("invalid configuration")

// checkRole validates a role ("" is RoleAll).
func checkRole(role string) (string, error) {
	switch role {
	case "":
		return RoleAll, nil
	case RoleAll, RoleAPI, RoleWorker:
		return role, nil
	}
	return "", fmt.Errorf("%w: --role %q: want all, api or worker", ErrConfig, role)
}

// servesAPI and runsJobs tell what a role does.
func servesAPI(role string) bool { return role != RoleWorker }
func runsJobs(role string) bool  { return role != RoleAPI }

// isReplicaSet reports whether a database URL is one several processes
// share as a replica set (PostgreSQL), as opposed to the embedded SQLite
// file of one process.
func isReplicaSet(database string) bool {
	u, err := url.Parse(database)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql")
}

// checkBlobDir refuses a replica set on a local blob directory that is not
// declared shared: each replica would write blobs only it can read.
func checkBlobDir(database string, s3 bool, shared bool, dir string) error {
	if !isReplicaSet(database) || s3 || shared {
		return nil
	}
	return fmt.Errorf("%w: a PostgreSQL database is shared by replicas, but the blob directory %s is local to this one: use S3 (--s3-endpoint), or --blob-dir-shared if every replica mounts the same directory", ErrConfig, dir)
}

// secretKey returns the key that seals the shared secrets in the database:
// --secret-key-file, required with PostgreSQL; with SQLite, by default, a
// key file generated under the data directory.
func (s *Server) secretKey() (*secret.Key, error) {
	cfg := s.cfg
	if cfg.SecretKeyFile != "" {
		return secret.ReadKeyFile(cfg.SecretKeyFile)
	}
	if isReplicaSet(cfg.Database) {
		return nil, fmt.Errorf("%w: a PostgreSQL database needs --secret-key-file (the same file on every replica; create one with: head -c 32 /dev/urandom | base64 > secret.key)", ErrConfig)
	}
	k, created, err := secret.LoadOrCreateKeyFile(filepath.Join(cfg.Data, "secret.key"))
	if created {
		cfg.Logger.Info("created the secret key that seals the signing key in the database", "file", filepath.Join(cfg.Data, "secret.key"))
	}
	return k, err
}

// openSecrets reads (or, on the replica set's first start, creates) the
// shared signing key and first admin token.
func (s *Server) openSecrets(ctx context.Context) error {
	sk, err := s.secretKey()
	if err != nil {
		return err
	}
	key, created, err := signing.Open(ctx, s.DB, sk, filepath.Join(s.cfg.Data, "signing.key"))
	if errors.Is(err, secret.ErrWrongKey) {
		return fmt.Errorf("%w (every replica must use the same --secret-key-file as the first one)", err)
	}
	if err != nil {
		return err
	}
	s.Key = key
	if created {
		s.cfg.Logger.Info("stored the signing key in the database", "key_id", signing.KeyID(key.Public()))
	}
	return s.bootstrapAdmin(ctx, sk)
}

// bootstrapAdmin creates the first admin token once for the replica set,
// stores its secret sealed in the database, and writes it to
// DATA/admin.token (0600) on every replica that lacks the file, so that
// `bpfarm` finds it there. The replica that created it prints it once.
func (s *Server) bootstrapAdmin(ctx context.Context, sk *secret.Key) error {
	cand, err := auth.NewSecret()
	if err != nil {
		return err
	}
	sealed, created, err := s.DB.InitAdmin(ctx, sk.Seal(store.SecretAdminToken, []byte(cand)), "admin", api.RoleAdmin, auth.Hash(cand))
	if errors.Is(err, store.ErrNotFound) {
		return nil // tokens older than the shared secret: nothing to share
	}
	if err != nil {
		return err
	}
	tok, err := sk.Open(store.SecretAdminToken, sealed)
	if err != nil {
		return fmt.Errorf("admin token in the database: %w (every replica must use the same --secret-key-file as the first one)", err)
	}
	path := filepath.Join(s.cfg.Data, "admin.token")
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == string(tok) {
		return nil
	}
	if err := os.WriteFile(path, append(tok, '\n'), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	if created {
		fmt.Fprintf(s.cfg.Out, "admin token (shown once, saved to %s): %s\n", path, tok)
	}
	return nil
}
