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
	"sync/atomic"
	"testing"
)

// replicaServer is a real HTTP server standing for one replica: it answers
// /api/v1/whoami with its name and echoes POST bodies, or answers status
// when set.
type replicaServer struct {
	*httptest.Server
	name   string
	status atomic.Int32
	calls  atomic.Int32
}

func newReplica(t *testing.T, name string) *replicaServer {
	r := &replicaServer{name: name}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		if s := r.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			w.Write([]byte(`{"error":"` + name + ` says no"}`))
			return
		}
		b, _ := io.ReadAll(req.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":"` + name + `","role":"` + string(b) + `"}`))
	}))
	t.Cleanup(r.Close)
	return r
}

func whoami(t *testing.T, c *Client) string {
	t.Helper()
	w, err := c.Whoami(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return w.Name
}

func TestFailover(t *testing.T) {
	a, b := newReplica(t, "a"), newReplica(t, "b")
	c, err := New(a.URL+", "+b.URL+"/", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Servers(); len(got) != 2 || got[1] != b.URL {
		t.Fatalf("servers: %v", got)
	}
	// Sticks to the first while it answers.
	for range 3 {
		if n := whoami(t, c); n != "a" {
			t.Fatalf("answered by %s, want a", n)
		}
	}
	// a answers 503 (its database is down): b answers, and stays in use.
	a.status.Store(http.StatusServiceUnavailable)
	if n := whoami(t, c); n != "b" {
		t.Fatalf("after a's 503: answered by %s", n)
	}
	a.status.Store(0)
	before := a.calls.Load()
	for range 3 {
		if n := whoami(t, c); n != "b" {
			t.Fatalf("answered by %s, want b (sticky)", n)
		}
	}
	if a.calls.Load() != before {
		t.Fatal("a was called while b answers")
	}
	if c.Server() != b.URL {
		t.Fatalf("server in use %s, want %s", c.Server(), b.URL)
	}
	// b stops: a (healthy again) answers.
	b.Close()
	if n := whoami(t, c); n != "a" {
		t.Fatalf("after b stopped: answered by %s", n)
	}
	// A 4xx is an answer: no failover.
	a.status.Store(http.StatusNotFound)
	_, err = c.Whoami(context.Background())
	if !errors.Is(err, ErrNotFound) || IsTransient(err) {
		t.Fatalf("404: %v", err)
	}
	// Nobody answers: transient, naming every attempt.
	a.status.Store(http.StatusBadGateway)
	_, err = c.Whoami(context.Background())
	var ae *APIError
	if !IsTransient(err) || !errors.Is(err, ErrUnavailable) || !errors.As(err, &ae) || ae.Status != http.StatusBadGateway {
		t.Fatalf("all down: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, strings.TrimPrefix(a.URL, "http://")) || !strings.Contains(msg, strings.TrimPrefix(b.URL, "http://")) {
		t.Fatalf("all down: %q names not both servers", msg)
	}
}

// A request body goes whole to the server that answers, whatever kind of
// reader it came in.
func TestFailoverReplaysBody(t *testing.T) {
	a, b := newReplica(t, "a"), newReplica(t, "b")
	c, err := New(a.URL+","+b.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, []byte("from-a-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bodies := map[string]func() io.Reader{
		"bytes.Reader":  func() io.Reader { return strings.NewReader("seekable") },
		"os.File":       func() io.Reader { f.Seek(0, io.SeekStart); return f },
		"unknown, sent": func() io.Reader { return io.MultiReader(strings.NewReader("piped")) },
	}
	want := map[string]string{"bytes.Reader": "seekable", "os.File": "from-a-file", "unknown, sent": "piped"}
	for name, body := range bodies {
		a.status.Store(http.StatusServiceUnavailable)
		b.status.Store(0)
		// Start from a: healthy and in use.
		c.servers.ok(c.servers.list[0])
		var w struct{ Name, Role string }
		resp, err := c.Do(context.Background(), http.MethodPost, "/echo", nil, body(), "text/plain", nil)
		if name == "unknown, sent" {
			// a read it before answering 503: it cannot be sent again.
			if err == nil || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := decode(resp, &w); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if w.Name != "b" || w.Role != want[name] {
			t.Fatalf("%s: %+v", name, w)
		}
	}
	// An unknown reader not yet read (connection refused) goes on.
	a.Close()
	resp, err := c.Do(context.Background(), http.MethodPost, "/echo", nil, io.MultiReader(strings.NewReader("unread")), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ Name, Role string }
	if err := decode(resp, &w); err != nil || w.Name != "b" || w.Role != "unread" {
		t.Fatalf("unread body after refused connection: %+v %v", w, err)
	}
}

func TestParseServers(t *testing.T) {
	for _, bad := range []string{"ftp://x", "http://", ",,", "a,http://b"} {
		if _, err := New(bad, ""); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	c, err := New("", "")
	if err != nil || c.Server() != DefaultServer {
		t.Fatalf("default: %v %v", c, err)
	}
	c, err = New("http://a:1,http://a:1/,http://b:2", "")
	if err != nil || len(c.Servers()) != 2 {
		t.Fatalf("duplicates: %v %v", c.Servers(), err)
	}
}
