package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// startServerWith runs a real server like startServer, with edit applied
// to its config; it returns the admin client and the data directory.
func startServerWith(tb testing.TB, edit func(*Config)) (*client.Client, string) {
	tb.Helper()
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(tb, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	data := tb.TempDir()
	cfg := Config{Data: data, Listener: ln, Out: io.Discard, Workers: 1, Verify: VerifyConfig{VMs: -1},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Open(ctx, cfg)
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
				return c, data
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bombSource is a small source whose object holds n bytes of zeros: an
// asm .space in a data section.
func bombSource(n int) string {
	return fmt.Sprintf(`#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
asm(".section .data.bomb,\"aw\"\n.space %d\n");
SEC("tracepoint/syscalls/sys_enter_openat") int p(void *ctx) { return 0; }
char LICENSE[] SEC("license") = "GPL";
`, n)
}

func bundle(t *testing.T, src string) *bpfsrc.Bundle {
	t.Helper()
	b, err := bpfsrc.New("bomb.bpf.c", []bpfsrc.File{{Name: "bomb.bpf.c", Data: []byte(src)}}, bpfsrc.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// largestBlob returns the size of the largest blob in the data directory.
func largestBlob(t *testing.T, data string) int64 {
	var largest int64
	filepath.WalkDir(filepath.Join(data, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil && fi.Size() > largest {
				largest = fi.Size()
			}
		}
		return nil
	})
	return largest
}

// TestSpaceBomb is the attack of issue 12: a source of a few hundred bytes
// whose object would be 60 MB. The build fails naming --max-object-size,
// nothing large is stored, and the server keeps serving. Against a
// token's quota, the object is refused naming max_bytes, and a push over
// the quota or the hourly build limit is refused naming it.
func TestSpaceBomb(t *testing.T) {
	admin, data := startServerWith(t, nil)
	ctx := context.Background()
	src := bombSource(60 << 20)
	if len(src) > 400 {
		t.Fatalf("the bomb's source is %d bytes", len(src))
	}
	res, err := admin.Push(ctx, "bomb", bundle(t, src), client.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := admin.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.State != api.StateFailed || b.ErrorKind != "user" || !strings.Contains(b.Error, "output exceeds 16 MiB (the server's --max-object-size)") ||
		strings.Contains(b.Error, "\n") || b.Object != nil {
		t.Fatalf("bomb build: %s %s %q object %v", b.State, b.ErrorKind, b.Error, b.Object)
	}
	if n := largestBlob(t, data); n > 1<<20 {
		t.Fatalf("a %d-byte blob was stored", n)
	}

	// A publisher with a small byte quota.
	pub, err := admin.CreateToken(ctx, "pub", api.RolePublisher)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetQuota(ctx, "pub", api.Quota{MaxBytes: 20000}); err != nil {
		t.Fatal(err)
	}
	pc, _ := client.New(admin.Server(), pub.Secret)
	res, err = pc.Push(ctx, "small-bomb", bundle(t, bombSource(30000)), client.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err = pc.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil {
		t.Fatal(err)
	}
	if b.State != api.StateFailed || !strings.Contains(b.Error, "max_bytes=20000") || b.Object != nil {
		t.Fatalf("build over the byte quota: %s %q", b.State, b.Error)
	}
	// Over the byte quota already: the push is refused, naming the limit.
	if _, err := admin.SetQuota(ctx, "pub", api.Quota{MaxBytes: 10}); err != nil {
		t.Fatal(err)
	}
	_, err = pc.Push(ctx, "other", bundle(t, bombSource(1)), client.PushOptions{})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge || !strings.Contains(ae.Message, "max_bytes=10") {
		t.Fatalf("push over the byte quota: %v", err)
	}
	// The hourly build limit.
	if _, err := admin.SetQuota(ctx, "pub", api.Quota{MaxBytes: -1, MaxBuildsPerHour: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = pc.Push(ctx, "other", bundle(t, bombSource(2)), client.PushOptions{})
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || !strings.Contains(ae.Message, "max_builds_per_hour=1") {
		t.Fatalf("push over the hourly build limit: %v", err)
	}
	q, err := admin.Quota(ctx, "pub")
	if err != nil || q.MaxBytes <= 10 || q.Overrides.MaxBuildsPerHour != 1 || q.BuildsLastHour != 1 {
		t.Fatalf("quota: %+v %v", q, err)
	}
	// Nothing of the refused pushes was stored, and the server serves.
	ps, err := admin.Programs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Name == "other" {
			t.Fatalf("a refused push left program %s", p.Name)
		}
	}
	res = pushExample(t, admin, "execsnoop")
	if b, err = admin.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build after the bombs: %+v %v", b, err)
	}
}

// TestPanickingJob is the attack of issue 12: a job that panics (injected
// through the job hook) is an internal error — an infrastructure failure,
// retried with backoff — and the worker goes on with the next job.
func TestPanickingJob(t *testing.T) {
	var panics atomic.Int32
	admin, _ := startServerWith(t, func(c *Config) {
		c.JobHook = func(kind string, id int64) {
			if kind == "build" && panics.Add(1) == 1 {
				panic("injected panic")
			}
		}
		c.Jobs.Backoff = time.Millisecond
	})
	ctx := context.Background()
	res, err := admin.Push(ctx, "first", bundle(t, bombSource(1)), client.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := admin.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	// It panicked once: its second attempt went through.
	if b.State != api.StateSucceeded || b.Attempts != 2 {
		t.Fatalf("panicked build: %s %s %q, attempt %d", b.State, b.ErrorKind, b.Error, b.Attempts)
	}
	res = pushExample(t, admin, "execsnoop")
	if b, err = admin.WaitBuild(ctx, res.Builds[0].ID, nil); err != nil || b.State != api.StateSucceeded {
		t.Fatalf("build after the panic: %+v %v", b, err)
	}
}
