package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// PostgresEnv is the environment variable naming the directory of
// PostgreSQL's server programs (initdb, postgres). Without it, Postgres
// uses Debian's /usr/lib/postgresql/15/bin, else the newest
// /usr/lib/postgresql/*/bin.
const PostgresEnv = "BPFARM_POSTGRES_BIN"

// postgresStartTimeout bounds the wait for the cluster to accept
// connections (generous: test machines are slow and loaded).
const postgresStartTimeout = 2 * time.Minute

// Postgres returns the URL of a fresh, empty database for the test, in a
// real PostgreSQL cluster; the database is dropped when the test ends.
//
// The cluster is started once per test binary, on the first call: initdb
// in a temporary directory, then postgres on 127.0.0.1 and a free port,
// its unix socket in that directory, with durability off (fsync,
// synchronous_commit, full_page_writes) for speed. As root, both run as the
// postgres user (initdb refuses root). The cluster stops, and its
// directory is removed, when the test binary exits, however it exits: a
// watcher process waits for the end of a pipe only the test binary holds.
// A TestMain that calls StopPostgres after m.Run waits for that instead.
//
// Without the programs (Debian: apt-get install postgresql) the test is
// skipped, or fails when Strict.
func Postgres(t testing.TB) string {
	t.Helper()
	c := cluster1(t)
	return c.url(c.create(t, "template0"))
}

// PostgresTemplate is Postgres with a database that is a copy of template:
// a database made once per test binary, on the first call naming it, by
// prepare (given its URL; it must close its connections). Tests that all
// start from the same state (a migrated schema) save preparing it each
// time.
func PostgresTemplate(t testing.TB, template string, prepare func(url string) error) string {
	t.Helper()
	c := cluster1(t)
	tmpl := "tmpl_" + dbNameFrom(template)
	templatesMu.Lock()
	err, done := templates[tmpl]
	if !done {
		if err = c.psql(`CREATE DATABASE "` + tmpl + `" TEMPLATE template0 STRATEGY FILE_COPY`); err == nil {
			if err = prepare(c.url(tmpl)); err != nil {
				err = fmt.Errorf("prepare: %w", err)
			}
		}
		templates[tmpl] = err
	}
	templatesMu.Unlock()
	if err != nil {
		t.Fatalf("postgresql: template database %s: %v", template, err)
	}
	return c.url(c.create(t, tmpl))
}

var (
	templatesMu sync.Mutex
	templates   = map[string]error{} // prepared template databases: their preparation's error
)

// cluster1 returns the test binary's cluster, starting it if needed.
func cluster1(t testing.TB) *cluster {
	t.Helper()
	c, err := startCluster()
	var missing *missingError
	if errors.As(err, &missing) {
		Require(t, "postgresql", missing.reason)
	}
	if err != nil {
		t.Fatalf("start postgresql: %v", err)
	}
	return c
}

// create makes a database for the test from template, dropped (in the
// background) when the test ends; it returns its name.
func (c *cluster) create(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbCounter.Add(1), dbNameFrom(t.Name()))
	// FILE_COPY: a copy of the template's files, faster than WAL_LOG for
	// small databases.
	if err := c.psql(`CREATE DATABASE "` + name + `" TEMPLATE "` + template + `" STRATEGY FILE_COPY`); err != nil {
		t.Fatalf("postgresql: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		c.drops.Add(1)
		go func() {
			defer c.drops.Done()
			c.psql(`DROP DATABASE "` + name + `" WITH (FORCE)`) // the cluster goes with the binary anyway
		}()
	})
	return name
}

// PostgresStartTime returns how long starting the test binary's cluster
// took (initdb and the server until it answered), or 0 if none was started.
func PostgresStartTime() time.Duration {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if theCluster == nil {
		return 0
	}
	return theCluster.started
}

// StopPostgres stops the test binary's cluster, if one was started, and
// waits until it is gone and its directory removed. Call it from TestMain
// after m.Run; without it the cluster is stopped just after the binary
// exits.
func StopPostgres() {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if theCluster == nil {
		return
	}
	theCluster.stop()
	theCluster, clusterErr = nil, errors.New("postgresql: stopped by StopPostgres")
}

var (
	clusterMu   sync.Mutex
	theCluster  *cluster
	clusterErr  error
	clusterDone bool
	dbCounter   atomic.Int64
)

type missingError struct{ reason string }

func (e *missingError) Error() string { return e.reason }

// cluster is a running PostgreSQL server of the test binary.
type cluster struct {
	port    int
	dir     string
	bin     string
	watcher *exec.Cmd
	// serverDone is closed when the server exited; serverErr is then
	// its exit status.
	serverDone chan struct{}
	serverErr  error
	hold       *os.File // the write end of the watcher's stdin
	drops      sync.WaitGroup
	started    time.Duration
}

// psql runs one SQL command as the postgres superuser, in database
// postgres. (Tests reach the database through the store only; this
// package speaks to the cluster through PostgreSQL's own client.)
func (c *cluster) psql(command string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres", "-d", "postgres", "-c", command)
	cmd.Env = append(withoutPGEnv(os.Environ()), "PGCONNECT_TIMEOUT=5")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql -c %q: %v: %s", command, err, bytes.TrimSpace(out))
	}
	return nil
}

// withoutPGEnv drops PG* variables, so that the environment of the tests
// cannot redirect psql.
func withoutPGEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PG") {
			out = append(out, kv)
		}
	}
	return out
}

func (c *cluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// stop closes the pipe the watcher waits on: it shuts the server down
// (fast) and removes the directory; stop waits for both.
func (c *cluster) stop() {
	c.drops.Wait()
	c.hold.Close()
	c.watcher.Wait()
	<-c.serverDone
}

func startCluster() (*cluster, error) {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if clusterDone {
		return theCluster, clusterErr
	}
	clusterDone = true
	bin, err := postgresBin()
	if err != nil {
		clusterErr = &missingError{err.Error()}
		return nil, clusterErr
	}
	cred, err := postgresCredential()
	if err != nil {
		clusterErr = &missingError{err.Error()}
		return nil, clusterErr
	}
	for attempt := 1; attempt <= 3; attempt++ {
		// Another process may take the free port before the server binds
		// it: then try again with another.
		theCluster, clusterErr = newCluster(bin, cred)
		if clusterErr == nil || !errors.Is(clusterErr, errExited) {
			break
		}
	}
	return theCluster, clusterErr
}

// postgresBin finds the directory of initdb and postgres.
func postgresBin() (string, error) {
	var candidates []string
	if d := os.Getenv(PostgresEnv); d != "" {
		candidates = []string{d}
	} else {
		candidates = []string{"/usr/lib/postgresql/15/bin"}
		others, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(others, func(i, j int) bool { return pgMajor(others[i]) > pgMajor(others[j]) })
		candidates = append(candidates, others...)
	}
	for _, d := range candidates {
		if isExecutable(filepath.Join(d, "initdb")) == nil && isExecutable(filepath.Join(d, "postgres")) == nil &&
			isExecutable(filepath.Join(d, "psql")) == nil {
			return d, nil
		}
	}
	if d := os.Getenv(PostgresEnv); d != "" {
		return "", fmt.Errorf("$%s=%s holds no initdb, postgres and psql", PostgresEnv, d)
	}
	return "", fmt.Errorf("no initdb, postgres and psql in /usr/lib/postgresql/*/bin and $%s unset "+
		"(install Debian's postgresql package: make deps)", PostgresEnv)
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// postgresCredential returns the user to run the cluster as: nil (this
// process's user) unless root, which PostgreSQL refuses: then the postgres
// user.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no postgres user to run the cluster as: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func newCluster(bin string, cred *syscall.Credential) (c *cluster, err error) {
	begin := time.Now()
	dir, err := os.MkdirTemp("", "bpfarm-postgres-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"--no-sync", "--encoding=UTF8", "--locale=C")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	// The watcher: it learns the server's pid, then waits for the end of
	// its stdin (this binary's exit, or StopPostgres), shuts the server
	// down and removes the directory. Own process group: a ^C to the test
	// reaches it only through the pipe.
	pr, pw, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	watcher := exec.Command("/bin/sh", "-c", `read pid; cat >/dev/null
		if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; fi
		rm -rf "$1"`, "pg-watcher", dir)
	watcher.Stdin = pr
	watcher.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := watcher.Start(); err != nil {
		pr.Close()
		pw.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start watcher: %w", err)
	}
	pr.Close()

	port, err := freePort()
	if err != nil {
		pw.Close()
		watcher.Wait()
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		pw.Close()
		watcher.Wait()
		return nil, err
	}
	defer logf.Close()
	server := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=64MB")
	server.Stdout, server.Stderr = logf, logf
	server.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := server.Start(); err != nil {
		pw.Close()
		watcher.Wait()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	fmt.Fprintf(pw, "%d\n", server.Process.Pid)
	c = &cluster{port: port, dir: dir, bin: bin, watcher: watcher, hold: pw, serverDone: make(chan struct{})}
	go func() {
		c.serverErr = server.Wait()
		close(c.serverDone)
	}()
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	deadline := time.Now().Add(postgresStartTimeout)
	for {
		select {
		case <-c.serverDone:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres %w (%v); log:\n%s", errExited, c.serverErr, tail(out, 4096))
		default:
		}
		perr := c.psql("SELECT 1")
		if perr == nil {
			c.started = time.Since(begin)
			return c, nil
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres not ready on port %d after %v: %v; log:\n%s", port, postgresStartTimeout, perr,
				tail(out, 4096))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		return "[...]" + string(b[len(b)-n:])
	}
	return string(b)
}

// dbNameFrom makes a test name into a part of a database name.
func dbNameFrom(test string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}
