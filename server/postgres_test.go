package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopPostgres()
	os.Exit(code)
}

// TestPostgresEndToEnd: a server whose metadata live in a real PostgreSQL
// takes a push, builds it, imports the host's kernel, relocates the build
// for it and serves the artifact and its blobs; a second server process on
// the same database (a replica) sees all of it and answers a push of the
// same sources from the first build.
func TestPostgresEndToEnd(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.Postgres(t)
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(keyFile, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Data: data, Database: dbURL, SecretKeyFile: keyFile, BlobDir: filepath.Join(t.TempDir(), "blobs"),
		BlobDirShared: true, Workers: 2}
	url, _ := runServer(t, cfg)
	c := adminClient(t, url, data)

	res := pushExample(t, c, "execsnoop")
	if !res.Created || len(res.Builds) != 1 {
		t.Fatalf("push: %+v", res)
	}
	b, err := c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil || b.State != api.StateSucceeded || b.Object == nil {
		t.Fatalf("build: %+v %v", b, err)
	}

	host, err := source.Host(source.Options{})
	if err != nil {
		testenv.Require(t, "kernel BTF", err.Error())
	}
	imp, err := c.ImportKernel(ctx, host, client.ImportOptions{})
	if err != nil || len(imp.Kernels) != 1 || !imp.Kernels[0].Created || imp.Kernels[0].Queued != 1 {
		t.Fatalf("import the host kernel: %+v %v", imp, err)
	}
	kid := imp.Kernels[0].Kernel.ID
	r, err := c.Resolve(ctx, "execsnoop", kid, "", 2*time.Minute)
	if err != nil || r.Artifact.State != api.ArtifactDone || r.Artifact.Relocated == nil || r.Manifest == nil {
		t.Fatalf("resolve for %s: %+v %v", kid, r, err)
	}
	obj, err := c.Blob(ctx, r.Artifact.Relocated.Digest, 64<<20)
	if err != nil || int64(len(obj)) != r.Artifact.Relocated.Size {
		t.Fatalf("relocated object: %d bytes (want %d), %v", len(obj), r.Artifact.Relocated.Size, err)
	}

	// The connection pool's metrics.
	if code, body := get(t, url+"/metrics"); code != 200 || !strings.Contains(body, `go_sql_max_open_connections{db_name="metadata"} 16`) {
		t.Errorf("metrics: %d, no pool metrics:\n%s", code, grepLines(body, "go_sql"))
	}

	// A second replica on the same database.
	cfg2 := cfg
	cfg2.Data = t.TempDir()
	cfg2.Role = RoleAPI
	url2, _ := runServer(t, cfg2)
	c2 := adminClient(t, url2, cfg2.Data) // the admin token, from the database
	as, err := c2.Artifacts(ctx, "execsnoop", kid)
	if err != nil || len(as) != 1 || as[0].ID != r.Artifact.ID {
		t.Fatalf("artifacts through the second replica: %+v %v", as, err)
	}
	again := pushExample(t, c2, "execsnoop")
	if again.Created || again.Builds[0].ID != b.ID || again.Builds[0].State != api.StateSucceeded {
		t.Fatalf("second push, through the second replica: %+v", again)
	}
}
