package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/failpoint"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/queue"
	"github.com/bpfarm/bpfarm/server/store"
)

// crashChildEnv names the data directory of a crash test's child server;
// crashDatabaseEnv its database URL (empty: SQLite in the data directory).
const (
	crashChildEnv    = "BPFARM_CRASH_CHILD_DATA"
	crashDatabaseEnv = "BPFARM_CRASH_CHILD_DATABASE"
)

// crashPolicy is the child's job terms: short leases, so that the jobs the
// crashed process held are claimed again soon after the restart.
var crashPolicy = queue.Policy{TTL: 2 * time.Second, Backoff: 100 * time.Millisecond, MaxAttempts: 5}

// TestCrashChild is the server of TestCrash, run in a child process (this
// test binary again). It serves DATA until SIGTERM, writing its address
// to DATA/addr. Failpoints come from the environment (BPFARM_FAILPOINTS).
func TestCrashChild(t *testing.T) {
	data := os.Getenv(crashChildEnv)
	if data == "" {
		t.Skip("the server of TestCrash, run in its child process")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Data: data, Listener: ln, Out: io.Discard, Workers: 1, Relocators: 1,
		Verify: VerifyConfig{VMs: -1}, GCInterval: -1, Jobs: crashPolicy,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if url := os.Getenv(crashDatabaseEnv); url != "" {
		// One process, but the replica set's configuration.
		cfg.Database, cfg.SecretKeyFile, cfg.BlobDirShared = url, filepath.Join(data, "secret.key"), true
	}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "addr.tmp"), []byte(ln.Addr().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(data, "addr.tmp"), filepath.Join(data, "addr"))
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// child is a running child server.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
	c    *client.Client
}

// startChild starts the server on data (and database, when not empty),
// with failpoints armed by spec.
func startChild(t *testing.T, data, database, spec string, n int) *child {
	t.Helper()
	os.Remove(filepath.Join(data, "addr"))
	log, err := os.Create(filepath.Join(data, fmt.Sprintf("child-%d.log", n)))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+data, crashDatabaseEnv+"="+database, failpoint.Env+"="+spec)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		log.Close()
		close(ch.done)
	}()
	t.Cleanup(func() {
		ch.stop(t)
		if t.Failed() {
			out, _ := os.ReadFile(log.Name())
			if len(out) > 20000 {
				out = out[len(out)-20000:]
			}
			t.Logf("child %d's log:\n%s", n, out)
		}
	})
	for {
		addr, err := os.ReadFile(filepath.Join(data, "addr"))
		if err == nil {
			tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
			if err != nil {
				t.Fatal(err)
			}
			if ch.c, err = client.New("http://"+string(addr), strings.TrimSpace(string(tok))); err != nil {
				t.Fatal(err)
			}
			return ch
		}
		select {
		case <-ch.done:
			out, _ := os.ReadFile(filepath.Join(data, fmt.Sprintf("child-%d.log", n)))
			t.Fatalf("child server ended before serving: %v\n%s", ch.err, out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// crashed reports whether the child died by SIGKILL (a failpoint).
func (ch *child) crashed() bool {
	select {
	case <-ch.done:
	default:
		return false
	}
	var ee *exec.ExitError
	if !errors.As(ch.err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func (ch *child) stop(t *testing.T) {
	select {
	case <-ch.done:
		return
	default:
	}
	ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch.done:
	case <-time.After(30 * time.Second):
		ch.cmd.Process.Kill()
		<-ch.done
		t.Errorf("child server did not stop on SIGTERM")
	}
}

// crashScenario is what the crash test does to the farm: import a kernel,
// push a program and wait for its build and artifacts, push the same
// sources under another name (a cache hit), import a second kernel, push
// a source that does not compile, and wait until every job is done. Every
// step is idempotent: after a crash, the test repeats the step that failed.
func crashScenario(t *testing.T) []func(ctx context.Context, c *client.Client) error {
	btf, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		testenv.Require(t, "host kernel BTF", err.Error())
	}
	importKernel := func(kid string) func(ctx context.Context, c *client.Client) error {
		return func(ctx context.Context, c *client.Client) error {
			id, err := kernel.ParseID(kid)
			if err != nil {
				return err
			}
			_, err = c.ImportKernel(ctx, &source.Kernel{ID: id, BTF: btf, Source: "crash test"}, client.ImportOptions{})
			return err
		}
	}
	pushAndWait := func(program, dir, src string) func(ctx context.Context, c *client.Client) error {
		return func(ctx context.Context, c *client.Client) error {
			var b = bundle(t, src)
			if dir != "" {
				b = exampleBundle(t, dir)
			}
			res, err := c.Push(ctx, program, b, client.PushOptions{})
			if err != nil {
				return err
			}
			for _, pb := range res.Builds {
				if _, err := c.WaitBuild(ctx, pb.ID, nil); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return []func(ctx context.Context, c *client.Client) error{
		importKernel("debian/12/x86_64/6.1.0-91-amd64"),
		pushAndWait("execsnoop", "execsnoop", ""),
		quiescent,
		pushAndWait("copy", "execsnoop", ""), // a cache hit
		importKernel("debian/12/x86_64/6.1.0-92-amd64"),
		pushAndWait("broken", "", "int x = ;\n"),
		quiescent,
	}
}

func exampleBundle(t *testing.T, name string) *bpfsrc.Bundle {
	b, err := exampleBundleErr(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exampleBundleErr(name string) (*bpfsrc.Bundle, error) {
	return bpfsrc.Collect(filepath.Join("..", "examples", name), "", bpfsrc.DefaultLimits)
}

// quiescent waits until no build or relocation is queued or running.
func quiescent(ctx context.Context, c *client.Client) error {
	for {
		bs, err := c.Builds(ctx, "")
		if err != nil {
			return err
		}
		as, err := c.Artifacts(ctx, "", "")
		if err != nil {
			return err
		}
		busy := 0
		for _, b := range bs {
			if !b.Done() {
				busy++
			}
		}
		for _, a := range as {
			if a.State == api.ArtifactQueued || a.State == api.ArtifactRunning {
				busy++
			}
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d jobs still pending: %w", busy, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// crashPoints are the failpoints between the server's state changes that
// the scenario reaches, with the hit to crash at.
var crashPoints = []string{
	"kernel/before-put", "kernel/stored", "kernel/stored@2",
	"push/bundle-stored", "push/revision-added", "push/build-ensured", "push/build-ensured@2",
	"build/claimed", "build/before-finish", "build/finished", "build/before-finish@2",
	"relocate/claimed", "relocate/before-finish", "relocate/finished", "relocate/before-finish@3",
}

// TestCrash crashes the server (SIGKILL) exactly at each failpoint between
// two state changes in turn, restarts it once on the same data, finishes
// the scenario, and checks that nothing was lost: every accepted build
// ended succeeded or failed for a user reason, every succeeded build has
// an artifact for every kernel of its arch, no row names a missing blob,
// and no restart beyond the one after the crash was needed. It runs on
// SQLite; TestCrashPostgres runs it on PostgreSQL.
func TestCrash(t *testing.T) { testCrash(t, "sqlite") }

// TestCrashPostgres is TestCrash on a real PostgreSQL (a fresh database per
// failpoint), with the replica set's configuration (a --secret-key-file,
// a shared blob directory).
func TestCrashPostgres(t *testing.T) { testCrash(t, "postgres") }

func testCrash(t *testing.T, backend string) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(t, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	points := crashPoints
	if testing.Short() {
		points = []string{"build/before-finish", "relocate/before-finish", "kernel/stored"}
		if p := os.Getenv("CRASH_POINTS"); p != "" {
			points = strings.Split(p, ",")
		}
	}
	for _, fp := range points {
		t.Run(strings.ReplaceAll(fp, "/", "_"), func(t *testing.T) {
			data := t.TempDir()
			database := ""
			if backend == "postgres" {
				database = testenv.Postgres(t)
				key := make([]byte, 32)
				rand.Read(key)
				if err := os.WriteFile(filepath.Join(data, "secret.key"), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			steps := crashScenario(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			ch := startChild(t, data, database, fp, 0)
			restarts := 0
			for i := 0; i < len(steps); {
				// The client retries a server that does not answer: the
				// step ends when the server dies.
				stepCtx, stepCancel := context.WithCancel(ctx)
				go func(ch *child) {
					select {
					case <-ch.done:
						stepCancel()
					case <-stepCtx.Done():
					}
				}(ch)
				err := steps[i](stepCtx, ch.c)
				stepCancel()
				if err == nil {
					i++
					continue
				}
				// A failed request: the server must have crashed at the
				// failpoint, once.
				select {
				case <-ch.done:
				case <-time.After(5 * time.Second):
				}
				if !ch.crashed() || restarts > 0 {
					t.Fatalf("step %d: %v (server crashed: %v, restarts %d)", i, err, ch.crashed(), restarts)
				}
				restarts++
				ch = startChild(t, data, database, "", restarts)
			}
			if restarts == 0 {
				// The failpoint may have been reached in a background job
				// after the last step: then the server is dead now.
				select {
				case <-ch.done:
				case <-time.After(time.Second):
				}
				if !ch.crashed() {
					t.Fatalf("the scenario never reached failpoint %s", fp)
				}
				ch = startChild(t, data, database, "", 1)
				if err := quiescent(ctx, ch.c); err != nil {
					t.Fatal(err)
				}
			}
			ch.stop(t)
			checkInvariants(t, data, database)
		})
	}
}

// checkInvariants checks a stopped server's data directory and database.
func checkInvariants(t *testing.T, data, database string) {
	t.Helper()
	ctx := context.Background()
	if database == "" {
		database = "sqlite:" + filepath.Join(data, "bpfarm.db")
	}
	db, err := store.Open(ctx, database, store.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bs, err := db.Builds(ctx, store.BuildFilter{})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := db.Kernels(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 2 || len(bs) != 3 {
		t.Errorf("%d kernels and %d builds, want 2 and 3", len(ks), len(bs))
	}
	for _, b := range bs {
		switch {
		case b.State == api.StateSucceeded:
		case b.State == api.StateFailed && b.ErrorKind == store.ErrorKindUser:
			continue
		default:
			t.Errorf("build %d of %s: %s (%s) %q", b.ID, b.Program, b.State, b.ErrorKind, b.Error)
			continue
		}
		as, err := db.Artifacts(ctx, store.ArtifactFilter{BuildID: b.ID})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]string{}
		for _, a := range as {
			have[a.Kernel] = a.State
		}
		for _, k := range ks {
			if k.Arch == b.Arch && have[k.KID] != api.ArtifactDone {
				t.Errorf("build %d of %s: artifact for %s is %q, want done", b.ID, b.Program, k.KID, have[k.KID])
			}
		}
	}
	blobs, err := blob.NewLocal(filepath.Join(data, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := db.BlobRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		d, err := blob.ParseDigest(r)
		if err != nil {
			t.Errorf("row names blob %q: %v", r, err)
			continue
		}
		if _, err := blobs.Stat(ctx, d); err != nil {
			t.Errorf("row names a missing blob %s: %v", r, err)
		}
	}
}
