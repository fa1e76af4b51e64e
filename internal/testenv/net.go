package testenv

import (
	"net"
	"sync"
	"testing"
)

// FreeAddr returns a loopback address HOST:PORT whose port was free a
// moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// TailBuffer is a concurrency-safe writer that keeps the last bytes
// written (a child process's output, for failure messages).
type TailBuffer struct {
	mu      sync.Mutex
	max     int
	b       []byte
	dropped bool
}

// NewTailBuffer returns a TailBuffer keeping the last max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

// Write appends p, dropping the oldest bytes beyond the limit.
func (w *TailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append(w.b[:0], w.b[len(w.b)-w.max:]...)
		w.dropped = true
	}
	return len(p), nil
}

// String returns what is kept, marked "[...]" when older bytes were dropped.
func (w *TailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dropped {
		return "[...]\n" + string(w.b)
	}
	return string(w.b)
}
