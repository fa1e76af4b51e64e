package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// slowBody yields n chunks, pausing between them.
type slowBody struct {
	n     int
	pause time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	b.n--
	time.Sleep(b.pause)
	return copy(p, strings.Repeat("x", 1024)), nil
}

func TestUploadBoundedByProgress(t *testing.T) {
	stall := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stall-reading":
			// Read a little, then stop reading the upload.
			io.ReadFull(r.Body, make([]byte, 1024))
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		case "/stall-answering":
			io.Copy(io.Discard, r.Body)
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		default:
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{}`)
		}
	}))
	defer srv.Close()
	// Deferred after srv.Close, so runs before it: Close waits for the
	// stalled handlers.
	defer close(stall)
	c, err := New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	const idle = time.Second
	c.IdleTimeout, c.AnswerTimeout = idle, idle

	t.Run("slow but steady upload outlives the idle limit", func(t *testing.T) {
		// 20 chunks, each well within the idle limit: the whole upload
		// takes several times the limit and must succeed.
		body := &slowBody{n: 20, pause: idle / 10}
		resp, err := c.Do(context.Background(), http.MethodPost, "/ok", nil, body, "application/octet-stream", nil)
		if err != nil {
			t.Fatalf("steady upload failed: %v", err)
		}
		resp.Body.Close()
	})
	for _, tc := range []struct{ path, phase string }{
		{"/stall-reading", "sending"},
		{"/stall-answering", "waiting for the answer"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			// A 64 MiB upload: more than the socket buffers hold, so a
			// server that stops reading stalls the sender (loopback
			// buffers grow to tcp_rmem's maximum, 32 MiB on some hosts).
			body := io.LimitReader(zeroReader{}, 64<<20)
			if tc.path == "/stall-answering" {
				body = &slowBody{n: 2}
			}
			_, err := c.Do(context.Background(), http.MethodPost, tc.path, nil, body, "application/octet-stream", nil)
			var se *StalledError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a StalledError", err)
			}
			if se.Phase != tc.phase || !IsTransient(err) {
				t.Errorf("got %v (phase %q, transient %v), want phase %q, transient", err, se.Phase, IsTransient(err), tc.phase)
			}
		})
	}
	t.Run("small calls keep the total deadline client", func(t *testing.T) {
		if isUpload(strings.NewReader("{}")) || !isUpload(&slowBody{}) || isUpload(nil) {
			t.Error("isUpload: small in-memory bodies are calls, streams are uploads")
		}
		if c.http.Timeout != DefaultCallTimeout || c.stream.Timeout != 0 {
			t.Errorf("timeouts: calls %s, uploads %s", c.http.Timeout, c.stream.Timeout)
		}
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// An upload (a file: size unknown to the transport) to a server that
// refuses the connection fails over to the next one, and alone it fails
// with the refusal (transient), not with the upload's own context being
// released ("context canceled"): found by the farm's random-kill test,
// where kernel imports never failed over from a killed API replica.
func TestUploadFailsOverOnRefusal(t *testing.T) {
	live := newReplica(t, "live")
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close() // its port now refuses connections
	path := filepath.Join(t.TempDir(), "kernel.btf")
	want := strings.Repeat("btf", 1<<20) // 3 MiB: an upload
	if err := os.WriteFile(path, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	c, err := New(refused.URL+","+live.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(context.Background(), http.MethodPost, "/echo", nil, f, "application/octet-stream", nil)
	if err != nil {
		t.Fatalf("upload with a refusing server first: %v", err)
	}
	var w struct{ Name, Role string }
	if err := decode(resp, &w); err != nil {
		t.Fatal(err)
	}
	if w.Name != "live" || w.Role != want {
		t.Fatalf("answered by %q with %d bytes, want live with %d", w.Name, len(w.Role), len(want))
	}

	f.Seek(0, io.SeekStart)
	alone, err := New(refused.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = alone.Do(context.Background(), http.MethodPost, "/echo", nil, f, "application/octet-stream", nil)
	if err == nil || errors.Is(err, context.Canceled) || !errors.Is(err, syscall.ECONNREFUSED) || !IsTransient(err) {
		t.Fatalf("upload to a refusing server: %v; want the refusal, transient", err)
	}
}
