package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Freeze stops the server with SIGSTOP and waits until every one of its
// threads is stopped: connections are then accepted by the kernel but
// nothing answers, like a hung storage server.
func (m *MinIOServer) Freeze() {
	m.t.Helper()
	pid := m.signal(syscall.SIGSTOP)
	deadline := time.Now().Add(time.Minute)
	for !allStopped(pid) {
		if time.Now().After(deadline) {
			m.t.Fatalf("minio: not stopped a minute after SIGSTOP")
		}
		time.Sleep(time.Millisecond)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (m *MinIOServer) Thaw() {
	m.t.Helper()
	m.signal(syscall.SIGCONT)
}

// signal sends sig to the server's process group and returns its pid.
func (m *MinIOServer) signal(sig syscall.Signal) int {
	m.t.Helper()
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		m.t.Fatalf("minio: signal %v: not started", sig)
	}
	if err := signalGroup(cmd, sig); err != nil {
		m.t.Fatalf("minio: signal %v: %v", sig, err)
	}
	return cmd.Process.Pid
}

// allStopped reports whether every thread of process pid is stopped (or
// gone), from the state field of /proc/PID/task/TID/stat.
func allStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, name := range stats {
		b, err := os.ReadFile(name)
		if err != nil {
			continue // exited
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		if st := b[i+2]; st != 'T' && st != 't' && st != 'Z' && st != 'X' {
			return false
		}
	}
	return true
}
