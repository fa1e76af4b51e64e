//go:build linux

package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// faultServer is a real server run in-process for the fault tests.
type faultServer struct {
	t    *testing.T
	url  string
	c    *client.Client
	tok  string
	s    *Server
	stop func()
}

// startFaultServer runs a server with cfg (Data, Listener, Out and Logger
// are filled in) and waits until it is ready.
func startFaultServer(t *testing.T, cfg Config) *faultServer {
	t.Helper()
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(t, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Data == "" {
		cfg.Data = t.TempDir()
	}
	cfg.Listener, cfg.Out = ln, io.Discard
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}
	t.Cleanup(stop)
	tok, err := os.ReadFile(filepath.Join(cfg.Data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	f := &faultServer{t: t, url: "http://" + ln.Addr().String(), tok: strings.TrimSpace(string(tok)), s: s, stop: stop}
	if f.c, err = client.New(f.url, f.tok); err != nil {
		t.Fatal(err)
	}
	f.waitReady(time.Minute)
	return f
}

// get sends a GET with the admin token and returns the status, the body
// and the Retry-After header.
func (f *faultServer) get(path string) (int, string, string) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.url+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Retry-After")
}

// waitReady polls /readyz until it answers 200.
func (f *faultServer) waitReady(limit time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		code, body, _ := f.get("/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("server not ready after %v: %d %s", limit, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// push pushes example name; a variant other than "" is written in a
// comment at the end of the entry file, so that each variant is a new
// bundle and a new build.
func (f *faultServer) push(name, variant string) (*api.PushResult, error) {
	f.t.Helper()
	b, err := bpfsrc.Collect(filepath.Join("..", "examples", name), "", bpfsrc.DefaultLimits)
	if err != nil {
		f.t.Fatal(err)
	}
	if variant != "" {
		for i := range b.Files {
			if b.Files[i].Name == b.Entry {
				b.Files[i].Data = append(append([]byte(nil), b.Files[i].Data...), "\n// variant "+variant+"\n"...)
			}
		}
	}
	return f.c.Push(context.Background(), name, b, client.PushOptions{})
}

// timed runs f and returns its error and duration, failing the test if f
// has not returned after a bound far beyond every deadline of the tests.
func timed(t *testing.T, what string, f func() error) (error, time.Duration) {
	t.Helper()
	const bound = 3 * time.Minute
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(bound):
		t.Fatalf("%s: no answer after %v: hung", what, bound)
		return nil, 0
	}
}

// want503 requires a 503 answer naming cause, with Retry-After.
func want503(t *testing.T, what string, code int, body, retryAfter, cause string) {
	t.Helper()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, cause) || retryAfter == "" {
		t.Errorf("%s: %d (Retry-After %q) %s; want 503 naming %q with Retry-After", what, code, retryAfter, strings.TrimSpace(body), cause)
	}
}

// wantUnavailable requires a client error that is a 503 naming cause.
func wantUnavailable(t *testing.T, what string, err error, cause string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.HasPrefix(ae.Message, cause) {
		t.Errorf("%s: %v; want a 503 naming %q", what, err, cause)
	}
}

// oneLine joins an answer's lines, for logs.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

const causeS3 = "object storage unreachable"

// TestFaultS3Frozen freezes the S3 server (SIGSTOP) under a running farm:
// pushes, downloads, resolves and /readyz answer 503 "object storage
// unreachable" within the blob deadlines instead of hanging, what needs
// only the database goes on, and once the server is thawed the same farm
// (no restart) is ready and builds again.
func TestFaultS3Frozen(t *testing.T) { eachDatabase(t, testFaultS3Frozen) }

func testFaultS3Frozen(t *testing.T, cfg Config) {
	m := testenv.StartMinIO(t)
	cfg.S3, cfg.Workers, cfg.HostKernel = m.Config, 2, true
	cfg.BlobTimeout, cfg.BlobIdleTimeout = time.Second, 2*time.Second
	f := startFaultServer(t, cfg)
	ctx := context.Background()

	res, err := f.push("execsnoop", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build before the freeze: %+v %v", b, err)
	}
	ks, err := f.c.Kernels(ctx, "")
	if err != nil || len(ks) == 0 {
		t.Fatalf("kernels: %v %v (the host kernel should be imported)", ks, err)
	}
	kernel := ks[0].ID
	if _, err := f.c.Resolve(ctx, "execsnoop", kernel, "", time.Minute); err != nil {
		t.Fatalf("resolve before the freeze: %v", err)
	}

	m.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			m.Thaw()
		}
	}()
	err, took := timed(t, "push", func() error { _, err := f.push("execsnoop", "frozen"); return err })
	t.Logf("push with S3 frozen: failed after %v: %v", took.Round(time.Millisecond), err)
	wantUnavailable(t, "push", err, causeS3)

	var code int
	var body, retry string
	_, took = timed(t, "readyz", func() error { code, body, retry = f.get("/readyz"); return nil })
	t.Logf("readyz with S3 frozen: %d after %v: %s", code, took.Round(time.Millisecond), oneLine(body))
	want503(t, "readyz", code, body, retry, causeS3)

	_, took = timed(t, "object download", func() error {
		code, body, retry = f.get("/api/v1/blobs/" + b.Object.Digest)
		return nil
	})
	t.Logf("object download with S3 frozen: %d after %v: %s", code, took.Round(time.Millisecond), oneLine(body))
	want503(t, "object download", code, body, retry, causeS3)

	err, took = timed(t, "resolve", func() error { _, err := f.c.Resolve(ctx, "execsnoop", kernel, "", 0); return err })
	t.Logf("resolve with S3 frozen: failed after %v: %v", took.Round(time.Millisecond), err)
	wantUnavailable(t, "resolve", err, causeS3)

	// What needs only the database goes on.
	if code, body, _ := f.get("/api/v1/programs"); code != http.StatusOK {
		t.Errorf("programs with S3 frozen: %d %s", code, body)
	}
	if code, _, _ := f.get("/healthz"); code != http.StatusOK {
		t.Errorf("healthz with S3 frozen: %d", code)
	}

	m.Thaw()
	thawed = true
	f.waitReady(time.Minute)
	res, err = f.push("execsnoop", "thawed")
	if err != nil {
		t.Fatalf("push after thaw: %v", err)
	}
	if b, err := f.c.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build after thaw: %+v %v", b, err)
	}
	if _, err := f.c.Resolve(ctx, "execsnoop", kernel, "", 2*time.Minute); err != nil {
		t.Fatalf("resolve after thaw: %v", err)
	}
}

const causeNoSpace = "no space left on the data volume"

// TestFaultVolumeFull fills the volume of the local blob store: pushes
// and /readyz answer 503 "no space left on the data volume", and once
// space is freed the same farm is ready and builds again.
func TestFaultVolumeFull(t *testing.T) { eachDatabase(t, testFaultVolumeFull) }

func testFaultVolumeFull(t *testing.T, cfg Config) {
	vol := testenv.SmallVolume(t, 64<<20)
	// The blob store alone is on the small volume.
	cfg.BlobDir, cfg.Workers = filepath.Join(vol.Dir, "blobs"), 2
	f := startFaultServer(t, cfg)
	ctx := context.Background()
	res, err := f.push("execsnoop", "")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := f.c.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build before filling the volume: %+v %v", b, err)
	}

	vol.Fill()
	err, took := timed(t, "push", func() error { _, err := f.push("execsnoop", "full"); return err })
	t.Logf("push with the volume full: failed after %v: %v", took.Round(time.Millisecond), err)
	wantUnavailable(t, "push", err, causeNoSpace)
	code, body, retry := f.get("/readyz")
	t.Logf("readyz with the volume full: %d %s", code, oneLine(body))
	want503(t, "readyz", code, body, retry, causeNoSpace)
	if code, body, _ := f.get("/api/v1/programs"); code != http.StatusOK {
		t.Errorf("programs with the volume full: %d %s", code, body)
	}

	vol.Release()
	f.waitReady(time.Minute)
	res, err = f.push("execsnoop", "freed")
	if err != nil {
		t.Fatalf("push after freeing space: %v", err)
	}
	if b, err := f.c.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build after freeing space: %+v %v", b, err)
	}
}

// eachDatabase runs test on the SQLite default and on a real PostgreSQL
// (testenv.Postgres): cfg holds what the database needs.
func eachDatabase(t *testing.T, test func(t *testing.T, cfg Config)) {
	t.Run("sqlite", func(t *testing.T) { test(t, Config{}) })
	t.Run("postgres", func(t *testing.T) {
		key := filepath.Join(t.TempDir(), "secret.key")
		if err := os.WriteFile(key, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		test(t, Config{Database: testenv.Postgres(t), SecretKeyFile: key, BlobDirShared: true})
	})
}
