package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"

	"github.com/bpfarm/bpfarm/btf/kernel"
)

func TestConfigServers(t *testing.T) {
	cfg, err := ParseConfig([]byte("servers: [http://a:8080, http://b:8080]\nname: h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = cfg.withDefaults(); err != nil || cfg.Server != "http://a:8080,http://b:8080" {
		t.Fatalf("servers: %q %v", cfg.Server, err)
	}
	cfg.StateDir = t.TempDir()
	host := kernel.HostInfo{ID: kernel.ID{Distro: "debian", Version: "12", Arch: "x86_64", Release: "6.1.0-1-amd64"}, HasBTF: true}
	a, err := New(cfg, Options{Host: &host})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.c.Servers(); len(got) != 2 || got[1] != "http://b:8080" {
		t.Fatalf("client servers: %v", got)
	}
	cfg, _ = ParseConfig([]byte("server: http://a:8080\nservers: [http://b:8080]\nname: h\n"))
	if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("server and servers: %v", err)
	}
}

// farmState is the desired state two fake replicas of one farm serve
// (their shared database).
type farmState struct {
	mu      sync.Mutex
	ds      *api.DesiredState
	changed chan struct{}
}

func (f *farmState) set(ds *api.DesiredState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ds = ds
	close(f.changed)
	f.changed = make(chan struct{})
}

// replica is a real HTTP server answering an agent from the farm's state:
// registration, reports, and desired-state long polls.
func (f *farmState) replica(t *testing.T, polls *atomic.Int32) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/v1/hosts/register":
			json.NewEncoder(w).Encode(api.Host{Name: "h", ArchiveKernel: "debian/12/x86_64/6.1.0-1-amd64"})
		case strings.HasSuffix(r.URL.Path, "/desired"):
			polls.Add(1)
			have := r.URL.Query().Get("version")
			wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
			for {
				f.mu.Lock()
				ds, ch := f.ds, f.changed
				f.mu.Unlock()
				if have != fmt.Sprint(ds.Version) || wait == 0 {
					json.NewEncoder(w).Encode(ds)
					return
				}
				select {
				case <-ch:
				case <-time.After(wait):
					json.NewEncoder(w).Encode(ds)
					return
				case <-r.Context().Done():
					return
				}
			}
		default:
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("{}"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestAgentFailover: an agent given two replicas follows the desired state
// through the second when the first stops, in the middle of its long poll.
func TestAgentFailover(t *testing.T) {
	dp := func(rev string) api.DesiredProgram {
		return api.DesiredProgram{Program: "p", Revision: rev, Kernel: "debian/12/x86_64/6.1.0-1-amd64"}
	}
	farm := &farmState{ds: &api.DesiredState{Host: "h", Version: 1, Programs: []api.DesiredProgram{dp("r1")}}, changed: make(chan struct{})}
	var pollsA, pollsB atomic.Int32
	a, b := farm.replica(t, &pollsA), farm.replica(t, &pollsB)
	l, f := newFakeLoader(), &fakeFetcher{}
	agent, _ := newFakeAgent(t, a.URL+","+b.URL, l, f, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within a minute", what)
			}
		}
	}
	loaded := func(rev string) func() bool {
		return func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.sets["p"] != nil && l.sets["p"].Revision == rev
		}
	}
	waitFor("r1 loaded through the first replica", loaded("r1"))
	if pollsB.Load() != 0 {
		t.Fatalf("the second replica was polled while the first answers")
	}
	waitFor("a long poll held on the first replica", func() bool { return pollsA.Load() >= 2 })
	// The first replica stops (its connections, the held poll too, end),
	// and the farm's desired state changes meanwhile.
	a.CloseClientConnections()
	a.Close()
	farm.set(&api.DesiredState{Host: "h", Version: 2, Programs: []api.DesiredProgram{dp("r2")}})
	waitFor("r2 loaded through the second replica", loaded("r2"))
	if pollsB.Load() == 0 {
		t.Fatal("the second replica was never polled")
	}
	if got := agent.c.Server(); got != b.URL {
		t.Fatalf("agent's server in use: %s, want %s", got, b.URL)
	}
}
