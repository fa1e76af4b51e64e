package store

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/fault"
)

// TestDatabaseUnavailable: a PostgreSQL server that can't be reached, at
// open or later (the network to it cut), is reported as
// fault.ErrDatabaseUnavailable.
func TestDatabaseUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	_, err = Open(ctx, "postgres://postgres@"+closed+"/x?sslmode=disable&connect_timeout=5", WithLogger(quiet))
	if !errors.Is(err, fault.ErrDatabaseUnavailable) {
		t.Fatalf("open on a closed port: %v", err)
	}

	u, err := url.Parse(testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	u.Host = p.addr
	q := u.Query()
	q.Set("connect_timeout", "5")
	u.RawQuery = q.Encode()
	db, err := Open(ctx, u.String(), WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.CreateToken(ctx, "a", "admin", "h"); err != nil {
		t.Fatal(err)
	}
	p.cut()
	if _, err := db.Tokens(ctx); !errors.Is(err, fault.ErrDatabaseUnavailable) {
		t.Errorf("list tokens with the network cut: %v", err)
	}
	if _, err := db.CreateToken(ctx, "b", "admin", "h2"); !errors.Is(err, fault.ErrDatabaseUnavailable) {
		t.Errorf("create a token with the network cut: %v", err)
	}
	if err := db.Ping(ctx); !errors.Is(err, fault.ErrDatabaseUnavailable) {
		t.Errorf("ping with the network cut: %v", err)
	}
}

// proxy forwards TCP connections to a server until cut, which closes its
// listener and every connection.
type proxy struct {
	addr  string
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().String(), l: l}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
