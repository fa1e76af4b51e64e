package server

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/store"
)

// runServer opens and runs a real server with cfg (on a loopback port),
// waits until it is ready and returns its base URL and a stop function
// (also run at cleanup) that returns Run's error.
func runServer(tb testing.TB, cfg Config) (string, func() error) {
	tb.Helper()
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(tb, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Listener = ln
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	cfg.Verify.VMs = -1
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Open(ctx, cfg)
	if err != nil {
		cancel()
		ln.Close()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("server: %v", err)
		}
	})
	url := "http://" + ln.Addr().String()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url, stop
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func adminClient(tb testing.TB, url, data string) *client.Client {
	tb.Helper()
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	c, err := client.New(url, strings.TrimSpace(string(tok)))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRoles: an api process queues builds and runs none; a worker process
// on the same data serves only health and metrics, and runs them.
func TestRoles(t *testing.T) {
	data := t.TempDir()
	ctx := context.Background()

	apiURL, stopAPI := runServer(t, Config{Data: data, Role: RoleAPI})
	c := adminClient(t, apiURL, data)
	res := pushExample(t, c, "execsnoop")
	if len(res.Builds) != 1 || res.Builds[0].State != api.StateQueued {
		t.Fatalf("push on the api process: %+v", res)
	}
	// Held for 2 s: an api process starts no build.
	b, err := c.Build(ctx, res.Builds[0].ID, 2*time.Second)
	if err != nil || b.State != api.StateQueued {
		t.Fatalf("build on an api process: %+v %v", b, err)
	}
	if err := stopAPI(); err != nil {
		t.Fatal(err)
	}

	workerURL, _ := runServer(t, Config{Data: data, Role: RoleWorker})
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := get(t, workerURL+p); code != http.StatusOK {
			t.Errorf("worker %s: %d", p, code)
		}
	}
	for _, p := range []string{"/api/v1/programs", "/api/v1/signing-key", "/"} {
		if code, body := get(t, workerURL+p); code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
			t.Errorf("worker %s: %d %s", p, code, body)
		}
	}
	// The worker builds what the api process queued. Read it through an
	// api process again (the worker answers no API).
	apiURL, _ = runServer(t, Config{Data: data, Role: RoleAPI})
	c = adminClient(t, apiURL, data)
	b, err = c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build run by the worker: %+v %v", b, err)
	}
}

func TestRoleInvalid(t *testing.T) {
	_, err := Open(context.Background(), Config{Data: t.TempDir(), Role: "scheduler", Out: io.Discard})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `--role "scheduler"`) {
		t.Fatalf("Open with role scheduler: %v", err)
	}
}

// Every replica of a set reads the signing key and admin token the first
// one stored; a replica with another secret key file is refused.
func TestSharedSecrets(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(keyFile, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, stop := runServer(t, Config{Data: data, SecretKeyFile: keyFile, Role: RoleAPI})
	c := adminClient(t, url, data)
	k1, err := c.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The key is no file in the data directory: it is in the database.
	for _, f := range []string{"signing.key", "secret.key"} {
		if _, err := os.Stat(filepath.Join(data, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s in the data directory: %v", f, err)
		}
	}
	// Another replica without the admin token file gets it from the database.
	if err := os.Remove(filepath.Join(data, "admin.token")); err != nil {
		t.Fatal(err)
	}
	url, stop = runServer(t, Config{Data: data, SecretKeyFile: keyFile, Role: RoleAPI})
	c = adminClient(t, url, data)
	if w, err := c.Whoami(ctx); err != nil || w.Role != api.RoleAdmin {
		t.Fatalf("admin token read back from the database: %+v %v", w, err)
	}
	k2, err := c.SigningKey(ctx)
	if err != nil || k2.PublicKey != k1.PublicKey {
		t.Fatalf("second replica's key %+v, first %+v (%v)", k2, k1, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(other, []byte(strings.Repeat("x", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Config{Data: data, SecretKeyFile: other, Out: io.Discard,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "same --secret-key-file") {
		t.Fatalf("replica with another secret key: %v", err)
	}
}

// An existing data directory — what an older bpfarm left: signing.key and
// admin.token files, the admin token in the database, no secrets there —
// keeps its key (agents go on verifying old manifests) and its token.
func TestLegacyDataDirectory(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	if err := os.WriteFile(filepath.Join(data, "signing.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(data, "bpfarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := auth.NewSecret()
	if _, err := db.CreateToken(ctx, "admin", api.RoleAdmin, auth.Hash(secret)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.WriteFile(filepath.Join(data, "admin.token"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	url, _ := runServer(t, Config{Data: data, Role: RoleAPI})
	c := adminClient(t, url, data)
	k, err := c.SigningKey(ctx)
	if err != nil || k.PublicKey != base64.StdEncoding.EncodeToString(pub) {
		t.Fatalf("carried-over key %+v (%v)", k, err)
	}
	if now, _ := os.ReadFile(filepath.Join(data, "admin.token")); string(now) != secret+"\n" {
		t.Fatalf("admin token file changed: %q", now)
	}
	if w, err := c.Whoami(ctx); err != nil || w.Role != api.RoleAdmin {
		t.Fatalf("old admin token: %+v %v", w, err)
	}
	ts, err := c.Tokens(ctx)
	if err != nil || len(ts) != 1 {
		t.Fatalf("tokens: %+v %v", ts, err)
	}
}

// TestClientFailover: a client given two real servers of one farm goes on
// through the second when the first stops.
func TestClientFailover(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	urlB, _ := runServer(t, Config{Data: data, Role: RoleAll})
	urlA, stopA := runServer(t, Config{Data: data, Role: RoleAPI})
	c := adminClient(t, urlA+","+urlB, data)
	res := pushExample(t, c, "execsnoop")
	if c.Server() != urlA {
		t.Fatalf("push answered by %s, want %s (the first)", c.Server(), urlA)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	b, err := c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build through the second server: %+v %v", b, err)
	}
	if c.Server() != urlB {
		t.Fatalf("in use: %s, want %s", c.Server(), urlB)
	}
	if w, err := c.Whoami(ctx); err != nil || w.Role != api.RoleAdmin {
		t.Fatalf("whoami: %+v %v", w, err)
	}
}

// pgReplica returns the config of one replica of a PostgreSQL replica set:
// its own data directory, the shared database, secret key file and blob
// directory.
func pgReplica(t *testing.T, dbURL, keyFile, blobs string, role string) Config {
	return Config{Data: t.TempDir(), Database: dbURL, SecretKeyFile: keyFile, BlobDir: blobs, BlobDirShared: true,
		Role: role}
}

func secretKeyFile(t *testing.T) string {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(keyFile, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return keyFile
}

// TestReplicaWakeUps: two server processes on one PostgreSQL. A
// desired-state long poll held on one is answered when an assignment is
// made through the other: the change crosses by LISTEN/NOTIFY. The poll
// waits 10 s, less than the 15 s a long poll takes to look again on its
// own, so only the notification can answer it "changed".
func TestReplicaWakeUps(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	keyFile, blobs := secretKeyFile(t), t.TempDir()
	cfgA := pgReplica(t, dbURL, keyFile, blobs, RoleAPI)
	urlA, _ := runServer(t, cfgA)
	cfgB := pgReplica(t, dbURL, keyFile, blobs, RoleAPI)
	urlB, _ := runServer(t, cfgB)
	a := adminClient(t, urlA, cfgA.Data)

	pushExample(t, a, "execsnoop")
	tok, err := a.EnrollHost(ctx, "web-1", map[string]string{"role": "web"})
	if err != nil {
		t.Fatal(err)
	}
	host, err := client.New(urlB, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.Register(ctx, api.HostRegistration{Name: "web-1", Kernel: "debian/12/x86_64/6.1.0-1-amd64",
		HasBTF: true, Labels: map[string]string{"role": "web"}}); err != nil {
		t.Fatal(err)
	}
	ds, err := host.Desired(ctx, "web-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		ds  *api.DesiredState
		err error
		at  time.Time
	}
	got := make(chan answer, 1)
	go func() {
		d, err := host.Desired(ctx, "web-1", ds.Version, 10*time.Second)
		got <- answer{d, err, time.Now()}
	}()
	// Let the poll reach the server and wait there.
	waiting := func() bool {
		_, body := get(t, urlB+"/metrics")
		return strings.Contains(body, "bpfarm_desired_polls_waiting 1")
	}
	for deadline := time.Now().Add(time.Minute); !waiting(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the long poll never waited on B")
		}
	}
	changed := time.Now()
	if _, err := a.Assign(ctx, api.AssignmentRequest{Program: "execsnoop", Selector: map[string]string{"role": "web"}}); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.ds.Version == ds.Version || len(r.ds.Programs) != 1 || r.ds.Programs[0].Program != "execsnoop" {
		t.Fatalf("long poll on B after an assignment through A: %+v (was version %d)", r.ds, ds.Version)
	}
	_, metrics := get(t, urlB+"/metrics")
	if !strings.Contains(metrics, `bpfarm_desired_polls_total{outcome="changed"} 1`) {
		t.Fatalf("the poll was not answered by a change notification:\n%s", grepLines(metrics, "bpfarm_desired_polls"))
	}
	t.Logf("assignment through A seen by the poll on B after %s", r.at.Sub(changed))
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReplicaSetRefusals: a PostgreSQL replica set refuses a local blob
// directory not declared shared, and a missing --secret-key-file, each
// with one clear line.
func TestReplicaSetRefusals(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err := Open(ctx, Config{Data: t.TempDir(), Database: dbURL, SecretKeyFile: secretKeyFile(t), Out: io.Discard, Logger: quiet})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--blob-dir-shared") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("local blob directory: %v", err)
	}
	_, err = Open(ctx, Config{Data: t.TempDir(), Database: dbURL, BlobDirShared: true, Out: io.Discard, Logger: quiet})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--secret-key-file") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("no secret key file: %v", err)
	}
}

// TestReplicaFirstStartRace: replicas starting together on an empty
// PostgreSQL database agree on one signing key and one admin token.
func TestReplicaFirstStartRace(t *testing.T) {
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(t, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	keyFile, blobs := secretKeyFile(t), t.TempDir()
	const n = 3
	var (
		servers [n]*Server
		errs    [n]error
		cfgs    [n]Config
		wg      sync.WaitGroup
	)
	for i := range n {
		cfgs[i] = pgReplica(t, dbURL, keyFile, blobs, RoleAPI)
		cfgs[i].Out, cfgs[i].Logger = io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = Open(ctx, cfgs[i])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		defer servers[i].DB.Close()
	}
	tok0, _ := os.ReadFile(filepath.Join(cfgs[0].Data, "admin.token"))
	for i := range n {
		if !servers[i].Key.Public().Equal(servers[0].Key.Public()) {
			t.Errorf("replica %d has another signing key", i)
		}
		if tok, err := os.ReadFile(filepath.Join(cfgs[i].Data, "admin.token")); err != nil || string(tok) != string(tok0) || len(tok) < 16 {
			t.Errorf("replica %d admin token %q (%v), replica 0 %q", i, tok, err, tok0)
		}
	}
	ts, err := servers[0].DB.Tokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "admin" {
		t.Fatalf("tokens after a racing first start: %+v %v", ts, err)
	}
}

// TestReplicaFailover: the CLI's client, given both replicas of a
// PostgreSQL replica set, goes on through the second when the first stops.
func TestReplicaFailover(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	keyFile, blobs := secretKeyFile(t), t.TempDir()
	cfgA := pgReplica(t, dbURL, keyFile, blobs, RoleAPI)
	urlA, stopA := runServer(t, cfgA)
	cfgB := pgReplica(t, dbURL, keyFile, blobs, RoleAll)
	urlB, _ := runServer(t, cfgB)
	c := adminClient(t, urlA+","+urlB, cfgA.Data)
	res := pushExample(t, c, "execsnoop")
	if c.Server() != urlA {
		t.Fatalf("push answered by %s, want %s", c.Server(), urlA)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	b, err := c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build through the second replica: %+v %v", b, err)
	}
	if c.Server() != urlB {
		t.Fatalf("in use: %s, want %s", c.Server(), urlB)
	}
}
