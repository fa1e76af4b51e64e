package testenv

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/server/blob"
)

// fakeTB records Skipf and Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped = fmt.Sprintf(format, args...)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestStrict(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "1": true, "true": true, "no": false, "junk": false} {
		t.Setenv(StrictEnv, v)
		if got := Strict(); got != want {
			t.Errorf("%s=%q: Strict() = %v, want %v", StrictEnv, v, got, want)
		}
	}
}

func TestRequire(t *testing.T) {
	t.Setenv(StrictEnv, "")
	f := &fakeTB{TB: t}
	Require(f, "widget", "not installed")
	if f.failed != "" || !strings.Contains(f.skipped, "widget unavailable: not installed") {
		t.Errorf("not strict: skipped %q, failed %q", f.skipped, f.failed)
	}

	t.Setenv(StrictEnv, "1")
	f = &fakeTB{TB: t}
	Require(f, "widget", "not installed")
	if f.skipped != "" || !strings.Contains(f.failed, "widget unavailable: not installed") {
		t.Errorf("strict: skipped %q, failed %q", f.skipped, f.failed)
	}
}

func TestLookBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("PATH", dir)

	t.Setenv("BPFARM_TEST_TOOL", exe)
	if p, err := LookBinary("nonexistent", "BPFARM_TEST_TOOL"); err != nil || p != exe {
		t.Errorf("from env: %q, %v", p, err)
	}
	t.Setenv("BPFARM_TEST_TOOL", plain)
	if _, err := LookBinary("tool", "BPFARM_TEST_TOOL"); err == nil {
		t.Errorf("env naming a non-executable: no error")
	}
	f := &fakeTB{TB: t}
	Binary(f, "tool", "BPFARM_TEST_TOOL")
	if f.failed == "" {
		t.Errorf("Binary with env naming a non-executable: not failed")
	}

	t.Setenv("BPFARM_TEST_TOOL", "")
	if p, err := LookBinary("tool", "BPFARM_TEST_TOOL"); err != nil || p != exe {
		t.Errorf("from PATH: %q, %v", p, err)
	}
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(bin, "tool")
	if err := os.WriteFile(cached, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := LookBinary("tool", "BPFARM_TEST_TOOL"); err != nil || p != cached {
		t.Errorf("from cache: %q, %v; want %s", p, err, cached)
	}

	_, err = LookBinary("absent", "BPFARM_TEST_TOOL")
	if err == nil || !strings.Contains(err.Error(), "$BPFARM_TEST_TOOL") || !strings.Contains(err.Error(), filepath.Join(bin, "absent")) {
		t.Errorf("absent: error %v does not say where it looked", err)
	}
	t.Setenv(StrictEnv, "")
	f = &fakeTB{TB: t}
	Binary(f, "absent", "BPFARM_TEST_TOOL")
	if f.skipped == "" || f.failed != "" {
		t.Errorf("Binary(absent): skipped %q, failed %q; want skipped", f.skipped, f.failed)
	}
}

func TestMinIO(t *testing.T) {
	var cfg blob.S3Config
	t.Run("server", func(t *testing.T) {
		cfg = MinIO(t)
		if !cfg.Insecure || cfg.Bucket == "" || !strings.HasPrefix(cfg.Endpoint, "127.0.0.1:") {
			t.Fatalf("unexpected config %+v", cfg)
		}
		s, err := blob.NewS3(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte("hello")
		d, err := blob.PutBytes(t.Context(), s, b)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := blob.ReadAll(t.Context(), s, d, 10); err != nil || string(got) != "hello" {
			t.Fatalf("ReadAll = %q, %v", got, err)
		}
		// A second server runs independently.
		other := MinIO(t)
		if other.Endpoint == cfg.Endpoint || other.Bucket == cfg.Bucket {
			t.Fatalf("second server shares endpoint or bucket: %+v, %+v", other, cfg)
		}
	})
	if cfg.Endpoint == "" || t.Failed() {
		return
	}
	// The subtest's cleanup killed the server.
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + cfg.Endpoint + "/minio/health/live")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("server still answers after the test ended: %s", resp.Status)
	}
}
