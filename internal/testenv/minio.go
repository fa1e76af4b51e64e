package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/server/blob"
)

// MinIOEnv is the environment variable naming the MinIO server binary.
const MinIOEnv = "BPFARM_MINIO"

// Credentials of the servers started by MinIO.
const (
	minioUser     = "bpfarm-test"
	minioPassword = "bpfarm-test-secret"
)

// minioStartTimeout bounds the wait for a server to become ready; it is
// generous because test machines can be slow and loaded.
const minioStartTimeout = 2 * time.Minute

// MinIO starts a throwaway MinIO server for the test and returns the
// configuration of a bucket on it with a unique name (not yet created;
// blob.NewS3 creates it). Use another Bucket name with the same config for
// another bucket on the same server.
//
// The server listens on 127.0.0.1 on random free ports, keeps its data in a
// temporary directory, and is killed when the test ends, pass or fail; its
// output is logged if the test failed. The binary is $BPFARM_MINIO, else
// $HOME/.cache/bpfarm/bin/minio, else minio on $PATH; without one the test
// is skipped, or fails if Strict.
func MinIO(t testing.TB) blob.S3Config {
	t.Helper()
	return StartMinIO(t).Config
}

// MinIOServer is a throwaway MinIO server (see MinIO) that a test can
// freeze, kill and restart, to see what a farm does when its object storage
// stops answering.
type MinIOServer struct {
	// Config is the configuration of a bucket on the server, as MinIO
	// returns it.
	Config blob.S3Config

	t                 testing.TB
	bin, dir          string
	addr, consoleAddr string
	out               *TailBuffer
	mu                sync.Mutex
	cmd               *exec.Cmd
	exited            chan struct{}
	waitErr           error
}

// StartMinIO starts a throwaway MinIO server for the test, like MinIO.
func StartMinIO(t testing.TB) *MinIOServer {
	t.Helper()
	bin := binary(t, "minio", MinIOEnv,
		"install it with: GOBIN=$HOME/.cache/bpfarm/bin go install github.com/minio/minio@latest")
	root := t.TempDir()

	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		// Another process may take the free ports before the server binds
		// them, and the server exits: then try again with others.
		m, err := newMinIO(t, bin, filepath.Join(root, fmt.Sprint(attempt)))
		if err == nil {
			err = m.start()
		}
		if err == nil {
			t.Cleanup(func() {
				m.Kill()
				if t.Failed() {
					t.Logf("minio server at %s: output:\n%s", m.addr, m.out)
				}
			})
			m.Config = blob.S3Config{
				Endpoint:  m.addr,
				Bucket:    UniqueBucket(),
				AccessKey: minioUser,
				SecretKey: minioPassword,
				Insecure:  true,
				Region:    "us-east-1",
			}
			return m
		}
		lastErr = err
		if !errors.Is(err, errExited) {
			break
		}
	}
	t.Fatalf("start minio: %v", lastErr)
	return nil
}

// errExited reports that a server exited before it was ready.
var errExited = errors.New("exited before becoming ready")

// UniqueBucket returns a new valid, unique bucket name.
func UniqueBucket() string {
	var b [8]byte
	rand.Read(b[:])
	return "bpfarm-test-" + hex.EncodeToString(b[:])
}

// newMinIO prepares a server with its files under dir, on free ports.
func newMinIO(t testing.TB, bin, dir string) (*MinIOServer, error) {
	for _, d := range []string{filepath.Join(dir, "data"), filepath.Join(dir, "certs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	consolePort, err := freePort()
	if err != nil {
		return nil, err
	}
	return &MinIOServer{t: t, bin: bin, dir: dir, out: NewTailBuffer(64 << 10),
		addr:        fmt.Sprintf("127.0.0.1:%d", port),
		consoleAddr: fmt.Sprintf("127.0.0.1:%d", consolePort)}, nil
}

// start starts the server and waits until it is ready. It returns an
// error including its output.
func (m *MinIOServer) start() error {
	cmd := exec.Command(m.bin, "server",
		"--address", m.addr,
		"--console-address", m.consoleAddr,
		"--certs-dir", filepath.Join(m.dir, "certs"),
		filepath.Join(m.dir, "data"))
	cmd.Env = append(withoutMinIOEnv(os.Environ()),
		"MINIO_ROOT_USER="+minioUser,
		"MINIO_ROOT_PASSWORD="+minioPassword,
		"MINIO_BROWSER=off", // no console UI
		"MINIO_UPDATE=off",  // no update checks
		"MINIO_CI_CD=on",    // accept a data directory on the root disk
	)
	cmd.Stdout, cmd.Stderr = m.out, m.out
	setProcAttr(cmd) // own process group, killed with the test process
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", m.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		m.waitErr = err
		m.mu.Unlock()
		close(exited)
	}()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()

	health := "http://" + m.addr + "/minio/health/live"
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(minioStartTimeout)
	for {
		select {
		case <-exited:
			m.mu.Lock()
			err := m.waitErr
			m.mu.Unlock()
			return fmt.Errorf("%s %w (%v); output:\n%s", m.bin, errExited, err, m.out)
		default:
		}
		if resp, err := client.Get(health); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			m.Kill()
			return fmt.Errorf("%s not ready at %s after %v; output:\n%s", m.bin, health, minioStartTimeout, m.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the server (SIGKILL, even if frozen) and waits for it to
// exit. Killing a server that is not running does nothing.
func (m *MinIOServer) Kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	killGroup(cmd)
	<-exited
}

// Restart starts a killed server again, on the same address and data, and
// waits until it is ready.
func (m *MinIOServer) Restart() {
	m.t.Helper()
	m.Kill()
	var err error
	for range 3 {
		if err = m.start(); err == nil {
			return
		}
		time.Sleep(time.Second) // the port may still be held a moment
	}
	m.t.Fatalf("restart minio: %v", err)
}

// withoutMinIOEnv drops MINIO_* variables, so that the environment of the
// tests cannot change the server's configuration.
func withoutMinIOEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MINIO_") {
			out = append(out, kv)
		}
	}
	return out
}
