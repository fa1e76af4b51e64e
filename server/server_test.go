package server

import (
	"context"
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

// startServer runs a real server in-process on a loopback port and returns
// a client holding the admin token.
func startServer(tb testing.TB) *client.Client {
	tb.Helper()
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(tb, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	data := tb.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Open(ctx, Config{Data: data, Listener: ln, Out: io.Discard, Workers: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	c, err := client.New("http://"+ln.Addr().String(), strings.TrimSpace(string(tok)))
	if err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pushExample(tb testing.TB, c *client.Client, name string) *api.PushResult {
	tb.Helper()
	b, err := bpfsrc.Collect(filepath.Join("..", "examples", name), "", bpfsrc.DefaultLimits)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := c.Push(context.Background(), name, b, client.PushOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

func TestServerPushAndFetch(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	res := pushExample(t, c, "execsnoop")
	if !res.Created || len(res.Builds) != 1 {
		t.Fatalf("push: %+v", res)
	}
	b, err := c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.State != api.StateSucceeded || b.Inspection == nil || b.Object == nil {
		t.Fatalf("build: %+v", b)
	}
	log, err := c.BuildLog(ctx, b.ID)
	if err != nil || !strings.Contains(log, "OK") {
		t.Fatalf("log: %q %v", log, err)
	}
	// The second push of the same sources is answered from the first.
	again := pushExample(t, c, "execsnoop")
	if again.Created || again.Builds[0].ID != b.ID || again.Builds[0].State != api.StateSucceeded {
		t.Fatalf("second push: %+v", again)
	}
	key, err := c.SigningKey(ctx)
	if err != nil || key.Algorithm != "ed25519" || key.PublicKey == "" {
		t.Fatalf("signing key: %+v %v", key, err)
	}
}

// BenchmarkPushCacheHit measures a push of already-built sources over
// loopback: bundling, upload, validation, digest, cache lookup, answer.
func BenchmarkPushCacheHit(b *testing.B) {
	c := startServer(b)
	res := pushExample(b, c, "execsnoop")
	if _, err := c.WaitBuild(context.Background(), res.Builds[0].ID, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r := pushExample(b, c, "execsnoop")
		if r.Created || r.Builds[0].State != api.StateSucceeded {
			b.Fatalf("not a cache hit: %+v", r)
		}
	}
}
