package main

import (
	"archive/tar"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// TestHeaderSets: a program using libbpf >= 1.2 macros fails with the
// built-in libbpf-dev 1.1 headers and builds once a real libbpf 1.5 header
// set is imported (the newest set is the default); --headers picks a set,
// the cache key covers it, and hostile sets are refused with one line.
func TestHeaderSets(t *testing.T) {
	libbpf := testenv.LibbpfHeaders(t)
	f := startFarm(t, "")
	prog := filepath.Join(repoRoot(t), "internal", "realworld", "programs", "newlibbpf")

	var sets []api.HeaderSet
	r := f.cli("headers", "list", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sets) != nil {
		t.Fatalf("headers list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if len(sets) != 1 || !sets[0].Builtin || !sets[0].Default || sets[0].Version != "1.1" {
		t.Fatalf("fresh farm: want only the built-in libbpf 1.1 set as default, got %+v", sets)
	}

	r = f.cli("push", prog, "--wait")
	if r.code != 1 || !strings.Contains(r.stderr+r.stdout, "bpf_ksym_exists") {
		t.Fatalf("push with libbpf-dev 1.1 headers: want exit 1 naming bpf_ksym_exists, got %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	r = f.cli("headers", "import", libbpf, "--name", "libbpf-1.5")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "imported libbpf-1.5: libbpf 1.5, 13 headers") {
		t.Fatalf("headers import: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = f.cli("headers", "import", libbpf, "--name", "libbpf-1.5")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "unchanged libbpf-1.5") {
		t.Fatalf("import again: %d %q %s", r.code, r.stdout, r.stderr)
	}
	// Other headers under the same name: refused, the set stays.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "bpf_helpers.h"), []byte("#define X 1\n"), 0o644)
	r = f.cli("headers", "import", other, "--name", "libbpf-1.5")
	if r.code != 1 || !strings.Contains(r.stderr, "already holds other headers") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("import other headers under the same name: %d %q", r.code, r.stderr)
	}

	r = f.cli("headers", "list", "--json")
	sets = nil
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sets) != nil || len(sets) != 2 {
		t.Fatalf("headers list: %d %s", r.code, r.stdout)
	}
	if sets[0].Name != "libbpf-1.5" || !sets[0].Default || sets[0].Version != "1.5" || sets[1].Default {
		t.Fatalf("want libbpf-1.5 the default, got %+v", sets)
	}
	if r := f.cli("headers", "list"); r.code != 0 || !strings.Contains(r.stdout, "libbpf-1.5 *") {
		t.Fatalf("headers list table: %q", r.stdout)
	}

	// The default is now libbpf 1.5: the program builds.
	var res api.PushResult
	r = f.cli("push", prog, "--wait", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
		t.Fatalf("push with libbpf 1.5: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	b := f.waitBuild(res.Builds[0].ID)
	if b.State != api.StateSucceeded || b.HeaderSet != "libbpf-1.5" {
		t.Fatalf("build: %s %s (header set %q)", b.State, b.Error, b.HeaderSet)
	}
	// The same sources with libbpf 1.5 under another name: the cache key
	// (sources, flags, compiler, header set digest) matches the first
	// successful build, so nothing is compiled.
	res = api.PushResult{}
	r = f.cli("push", prog, "--name", "newlibbpf-copy", "--wait", "--json", "--headers", "libbpf-1.5")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
		t.Fatalf("push --headers libbpf-1.5: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if b := f.waitBuild(res.Builds[0].ID); b.State != api.StateSucceeded || b.CachedFrom == 0 || b.HeaderSet != "libbpf-1.5" {
		t.Fatalf("push --headers libbpf-1.5 under another name: want a cache hit, got %+v", b)
	}
	// Explicitly the built-in set: another cache key, a real compile, the
	// old failure.
	r = f.cli("push", prog, "--wait", "--headers", "builtin")
	if r.code != 1 || !strings.Contains(r.stderr+r.stdout, "bpf_ksym_exists") {
		t.Fatalf("push --headers builtin: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = f.cli("push", prog, "--wait", "--headers", "no-such-set")
	if r.code != 1 || !strings.Contains(r.stderr, `header set "no-such-set" is not imported`) {
		t.Fatalf("push --headers no-such-set: %d %q", r.code, r.stderr)
	}
	// Back on the first name the build compiles with libbpf 1.5 again.
	if r := f.cli("push", prog, "--wait", "--headers", "libbpf-1.5"); r.code != 0 {
		t.Fatalf("push --headers libbpf-1.5: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// Hostile or broken sets: 4xx, one line, nothing stored.
	helpers := file("bpf_helpers.h", "#pragma once\n")
	link := tarEntry{hdr: tar.Header{Name: "bpf_tracing.h", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}
	for _, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"symlink", tarGz(t, helpers, link).Bytes(), "symbolic link"},
		{"not a header", tarGz(t, helpers, file("libbpf.c", "int x;")).Bytes(), "only *.h files"},
		{"escape", tarGz(t, helpers, file("../x.h", "")).Bytes(), "escapes"},
		{"nested", tarGz(t, file("a/bpf_helpers.h", ""), file("b/c/x.h", "")).Bytes(), "directories"},
		{"no bpf_helpers.h", tarGz(t, file("bpf_tracing.h", "")).Bytes(), "no bpf_helpers.h"},
		{"binary", tarGz(t, helpers, file("x.h", "a\x00b")).Bytes(), "NUL"},
		{"too large", tarGz(t, helpers, file("big.h", strings.Repeat("x", 2<<20))).Bytes(), "limit"},
		{"not gzip", []byte("hello"), "gzip"},
	} {
		code, body := f.api("POST", "/api/v1/header-sets?name=bad", f.admin, "application/gzip", strings.NewReader(string(c.body)), nil)
		var e struct{ Error string }
		json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || !strings.Contains(e.Error, c.want) || strings.Contains(e.Error, "\n") {
			t.Errorf("%s: got %d %s, want 400 naming %q", c.name, code, body, c.want)
		}
	}
	code, _ := f.api("POST", "/api/v1/header-sets?name=../x", f.admin, "application/gzip", tarGz(t, helpers), nil)
	if code != http.StatusBadRequest {
		t.Errorf("bad name: %d", code)
	}
	tok := strings.TrimSpace(f.cli("tokens", "create", "--role", "reader", "--name", "r").stdout)
	if code, _ := f.api("POST", "/api/v1/header-sets?name=x", tok, "application/gzip", tarGz(t, helpers), nil); code != http.StatusForbidden {
		t.Errorf("reader import: %d, want 403", code)
	}
	if r := f.cli("headers", "list", "--json"); !strings.Contains(r.stdout, "libbpf-1.5") || strings.Contains(r.stdout, `"bad"`) {
		t.Errorf("after refusals: %s", r.stdout)
	}
}
