//go:build linux

package agente2e

// Attacks on what an agent loads, tried as an attacker would: a proxy (or
// a compromised mirror) in front of the real server that answers with
// another validly signed artifact than the one asked for, against the Go
// library, `bpfarm-agent load` and the daemon; and program and map names
// chosen to escape the set's pin directory. Each is refused with one
// clear line, leaves nothing behind, and the server keeps serving.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/client/agent"
	"github.com/bpfarm/bpfarm/internal/testenv"
)

// substitutingProxy is a reverse proxy in front of the real server that
// rewrites requests (to fetch another program's, revision's, kernel's or
// arch's artifact than the one asked for) and answers, as told.
type substitutingProxy struct {
	*httptest.Server
	mu      sync.Mutex
	rewrite func(*http.Request)        // nil: pass through
	answer  func(*http.Response) error // nil: pass through
}

func newSubstitutingProxy(t *testing.T, target string) *substitutingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &substitutingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		p.mu.Lock()
		rw := p.rewrite
		p.mu.Unlock()
		if rw != nil {
			rw(r)
		}
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		an := p.answer
		p.mu.Unlock()
		if an != nil {
			return an(resp)
		}
		return nil
	}
	rp.FlushInterval = -1
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

// set installs an attack (nil, nil: an honest proxy).
func (p *substitutingProxy) set(rewrite func(*http.Request), answer func(*http.Response) error) {
	p.mu.Lock()
	p.rewrite, p.answer = rewrite, answer
	p.mu.Unlock()
}

// artifactRequest reports whether r resolves an artifact of program.
func artifactRequest(r *http.Request, program string) bool {
	return r.URL.Path == "/api/v1/programs/"+program+"/artifact"
}

// otherProgram answers a request for program's artifact with other's
// newest.
func otherProgram(program, other string) func(*http.Request) {
	return func(r *http.Request) {
		if artifactRequest(r, program) {
			r.URL.Path = "/api/v1/programs/" + other + "/artifact"
			r.URL.RawPath = ""
			q := r.URL.Query()
			q.Del("revision")
			r.URL.RawQuery = q.Encode()
		}
	}
}

// otherQuery answers a request for program's artifact with the artifact
// of the query parameter key set to value (a revision, a kernel).
func otherQuery(program, key, value string) func(*http.Request) {
	return func(r *http.Request) {
		if artifactRequest(r, program) {
			q := r.URL.Query()
			q.Set(key, value)
			r.URL.RawQuery = q.Encode()
		}
	}
}

// attackFarm is a real server with two revisions of schedcount and another
// program, built for x86_64 and arm64 and relocated for this host's
// kernel, another x86_64 kernel and an arm64 kernel.
type attackFarm struct {
	*farm
	host, otherKernel, armKernel string
	rev1, rev2                   string // schedcount's, rev2 the newer
}

func startAttackFarm(t *testing.T) *attackFarm {
	t.Helper()
	requireDaemonEnv(t)
	otherDeb := testenv.DebianKernel(t, "6.1")
	armDeb := testenv.DebianKernelArch(t, "6.1", "arm64")
	f := &attackFarm{farm: startFarm(t)}
	ctx := context.Background()
	hk, err := source.Host(source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.ImportKernel(ctx, hk, client.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	f.host = hk.ID.String()
	for _, deb := range []struct {
		path string
		id   *string
	}{{otherDeb, &f.otherKernel}, {armDeb, &f.armKernel}} {
		fh, err := os.Open(deb.path)
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.admin.ImportKernelFile(ctx, deb.path, fh, client.ImportOptions{})
		fh.Close()
		if err != nil || len(res.Kernels) == 0 {
			t.Fatalf("import %s: %+v %v", deb.path, res, err)
		}
		*deb.id = res.Kernels[0].Kernel.ID
	}
	if f.otherKernel == f.host {
		t.Fatalf("the host runs %s: no other x86_64 kernel to substitute", f.host)
	}
	f.rev1 = f.pushArches("schedcount", schedcount(t, nil), "x86_64", "arm64")
	f.rev2 = f.pushArches("schedcount", schedcount(t, func(s string) string { return s + "\n/* revision 2 */\n" }), "x86_64", "arm64")
	f.pushArches("other", schedcount(t, func(s string) string { return s + "\n/* another program */\n" }), "x86_64", "arm64")
	for _, p := range []struct{ program, rev string }{{"schedcount", f.rev1}, {"schedcount", f.rev2}, {"other", ""}} {
		for _, k := range []string{f.host, f.otherKernel, f.armKernel} {
			f.waitArtifact(p.program, p.rev, k)
		}
	}
	return f
}

// pushArches pushes a bundle for arches and waits for its builds.
func (f *attackFarm) pushArches(name string, b *bpfsrc.Bundle, arches ...string) string {
	f.t.Helper()
	ctx := context.Background()
	res, err := f.admin.Push(ctx, name, b, client.PushOptions{Arches: arches})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, b := range res.Builds {
		done, err := f.admin.WaitBuild(ctx, b.ID, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		if done.State != api.StateSucceeded {
			f.t.Fatalf("build %d of %s: %s: %s", b.ID, name, done.State, done.Error)
		}
	}
	return res.Revision
}

// waitArtifact waits until the artifact of program (revision rev, or the
// newest) for kernel kid is relocated.
func (f *attackFarm) waitArtifact(program, rev, kid string) {
	f.t.Helper()
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(100 * time.Millisecond) {
		res, err := f.admin.Resolve(context.Background(), program, kid, rev, 10*time.Second)
		if err == nil && res.Manifest != nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("artifact of %s@%s for %s: %v", program, rev, kid, err)
		}
	}
}

// readyArtifact waits (a while) until the artifact of program at revision
// rev for kernel kid can be resolved; it may be called off the test's
// goroutine.
func (f *attackFarm) readyArtifact(program, rev, kid string) {
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if res, err := f.admin.Resolve(context.Background(), program, kid, rev, 10*time.Second); err == nil && res.Manifest != nil {
			return
		}
	}
}

// attack is one substitution, and the one line its refusal must hold.
type attack struct {
	name    string
	rewrite func(*http.Request)
	want    string
}

// attacks are the substitutions of schedcount's artifact for a request of
// revision asked (empty: the newest).
func (f *attackFarm) attacks(asked string) []attack {
	as := []attack{
		{"another program", otherProgram("schedcount", "other"),
			"asked for program schedcount, the signed manifest is for program other"},
		{"another kernel", otherQuery("schedcount", "kernel", f.otherKernel),
			"asked for kernel " + f.host + ", the signed manifest is for kernel " + f.otherKernel},
		{"another arch", otherQuery("schedcount", "kernel", f.armKernel),
			"asked for arch x86_64, the signed manifest is for arch arm64"},
	}
	if asked == "" {
		as = append(as, attack{"an older revision", otherQuery("schedcount", "revision", f.rev1),
			"revision " + f.rev1[:12] + " is older than revision " + f.rev2[:12] + ", the newest loaded on this host"})
	} else {
		as = append(as, attack{"another revision", otherQuery("schedcount", "revision", f.rev1),
			"asked for revision " + asked[:12] + ", the signed manifest is for revision " + f.rev1[:12]})
	}
	return as
}

// serving checks that the server still serves: an honest fetch through
// the proxy succeeds.
func (f *attackFarm) serving(t *testing.T, c *client.Client, opt client.FetchOptions) {
	t.Helper()
	got, err := c.FetchArtifact(context.Background(), "schedcount", f.host, "", opt)
	if err != nil || got.Manifest.Revision != f.rev2 || got.FromCache {
		t.Fatalf("after the attacks, an honest fetch: %v", err)
	}
}

func (f *attackFarm) publicKey(t *testing.T) []byte {
	t.Helper()
	pub, _, err := f.admin.PinnedKey(context.Background(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestSubstitutingProxy: a proxy in front of the real server swaps in
// another program's, an older revision's, another kernel's and another
// arch's validly signed artifact. The Go library, `bpfarm-agent load` and
// the daemon refuse each with one line naming what was asked for and what
// came back; nothing is loaded or cached; the server keeps serving.
func TestSubstitutingProxy(t *testing.T) {
	f := startAttackFarm(t)
	proxy := newSubstitutingProxy(t, f.url)
	reader := f.token("attack-reader", api.RoleReader)
	pub := f.publicKey(t)

	t.Run("library", func(t *testing.T) {
		ctx := context.Background()
		c, err := client.New(proxy.URL, reader)
		if err != nil {
			t.Fatal(err)
		}
		cache := t.TempDir()
		opt := client.FetchOptions{PublicKey: pub, CacheDir: cache, Attempts: 1}
		good, err := c.FetchArtifact(ctx, "schedcount", f.host, "", opt)
		if err != nil || good.Manifest.Revision != f.rev2 {
			t.Fatalf("honest fetch: %v", err)
		}
		// What a program does once it loaded the artifact.
		if err := client.RecordLoaded(cache, good.Manifest); err != nil {
			t.Fatal(err)
		}
		cached := func() []byte {
			b, _ := os.ReadFile(filepath.Join(cache, "manifests", "schedcount", url.PathEscape(f.host)+".json"))
			return b
		}
		before := cached()
		for _, asked := range []string{"", f.rev2} {
			for _, at := range f.attacks(asked) {
				proxy.set(at.rewrite, nil)
				got, err := c.FetchArtifact(ctx, "schedcount", f.host, asked, opt)
				proxy.set(nil, nil)
				if !errors.Is(err, client.ErrWrongArtifact) || !strings.Contains(err.Error(), at.want) ||
					strings.Contains(err.Error(), "\n") || got != nil {
					t.Errorf("%s (revision %q): %v; want one line with %q", at.name, asked, err, at.want)
				}
				if client.IsTransient(err) {
					t.Errorf("%s: a refused artifact is not transient", at.name)
				}
			}
		}
		if !bytes.Equal(cached(), before) {
			t.Error("a refused artifact replaced the cached last good one")
		}
		f.serving(t, c, opt)
	})

	t.Run("bpfarm-agent load", func(t *testing.T) {
		agentBin := buildAgent(t)
		pinDir, stateDir, cacheDir := testPinDir(t), t.TempDir(), t.TempDir()
		run := func(args ...string) (int, string, string) {
			cmd := exec.Command(agentBin, append([]string{"--server", proxy.URL, "--token", reader}, args...)...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), out.String(), errb.String()
			} else if err != nil {
				t.Fatal(err)
			}
			return 0, out.String(), errb.String()
		}
		dirs := []string{"--pin-dir", pinDir, "--state-dir", stateDir, "--cache-dir", cacheDir}
		// Loaded honestly once (the newest, revision 2), then unloaded:
		// this host has loaded revision 2.
		if code, out, errOut := run(append([]string{"load", "schedcount"}, dirs...)...); code != 0 || !strings.Contains(out, f.rev2[:12]) {
			t.Fatalf("honest load: exit %d\n%s%s", code, out, errOut)
		}
		if code, _, errOut := run(append([]string{"unload", "schedcount"}, dirs...)...); code != 0 {
			t.Fatalf("unload: exit %d: %s", code, errOut)
		}
		for _, asked := range []string{"", f.rev2} {
			for _, at := range f.attacks(asked) {
				args := append([]string{"load", "schedcount"}, dirs...)
				if asked != "" {
					args = append(args, "--revision", asked)
				}
				proxy.set(at.rewrite, nil)
				code, out, errOut := run(args...)
				proxy.set(nil, nil)
				first, _, _ := strings.Cut(errOut, "\n")
				if code != 1 || !strings.HasPrefix(first, "bpfarm-agent: artifact of schedcount refused: ") || !strings.Contains(first, at.want) {
					t.Errorf("%s (revision %q): exit %d, first line %q; want exit 1 and %q\n%s", at.name, asked, code, first, at.want, out)
				}
				if entries, _ := os.ReadDir(pinDir); len(entries) > 0 {
					t.Errorf("%s: the refused load left %s in the pin directory", at.name, entries[0].Name())
				}
				if entries, _ := os.ReadDir(stateDir); len(entries) > 0 {
					t.Errorf("%s: the refused load left %s in the state directory", at.name, entries[0].Name())
				}
			}
		}
		// Asked for explicitly, the older revision loads.
		if code, out, errOut := run(append([]string{"load", "schedcount", "--revision", f.rev1}, dirs...)...); code != 0 || !strings.Contains(out, f.rev1[:12]) {
			t.Fatalf("load --revision of the older revision: exit %d\n%s%s", code, out, errOut)
		}
		if code, _, errOut := run(append([]string{"unload", "schedcount"}, dirs...)...); code != 0 {
			t.Fatalf("unload: exit %d: %s", code, errOut)
		}
		c, _ := client.New(proxy.URL, reader)
		f.serving(t, c, client.FetchOptions{PublicKey: pub, Attempts: 1})
	})

	t.Run("daemon", func(t *testing.T) {
		ctx := context.Background()
		sub := *f.farm // the farm's helpers fail this subtest, not its parent
		sub.t = t
		f := &attackFarm{farm: &sub, host: f.host, otherKernel: f.otherKernel, armKernel: f.armKernel, rev1: f.rev1, rev2: f.rev2}
		cfg := agent.Config{
			Server: proxy.URL, Token: f.hostToken("attacked-host"), Name: "attacked-host",
			Labels:   map[string]string{"role": "attacked"},
			StateDir: t.TempDir(), RunDir: t.TempDir(), PinDir: testPinDir(t), CacheDir: t.TempDir(),
			Poll: agent.PollConfig{Wait: 30 * time.Second, Heartbeat: time.Hour, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
		}
		if _, err := f.admin.Assign(ctx, api.AssignmentRequest{Program: "schedcount", Selector: map[string]string{"role": "attacked"}}); err != nil {
			t.Fatal(err)
		}
		startAgent(t, cfg)
		running := func(h *api.Host) bool {
			p := hostProgram(h, "schedcount")
			return p != nil && p.State == api.HostProgramLoaded && p.Revision == f.rev2
		}
		f.waitHost("attacked-host", "schedcount revision 2 loaded", running)
		_, ids := linkIDs(t, cfg, "schedcount")

		// Each attack is tried on a new revision the server desires.
		forgeDesired := func(newest, older string) func(*http.Response) error {
			return func(resp *http.Response) error {
				if !strings.HasSuffix(resp.Request.URL.Path, "/desired") {
					return nil
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return err
				}
				b = bytes.ReplaceAll(b, []byte(newest), []byte(older))
				resp.Body = io.NopCloser(bytes.NewReader(b))
				resp.ContentLength = int64(len(b))
				resp.Header.Del("Content-Length")
				return nil
			}
		}
		daemonAttacks := []string{"another program", "another kernel", "another arch", "another revision", "an older revision"}
		for i, name := range daemonAttacks {
			// The attack is in place before the server desires the new
			// revision rev: the agent's first fetch of it is attacked.
			at := attack{name: name}
			next := fmt.Sprintf("\n/* attack %d */\n", i)
			arches := []string{"x86_64"}
			switch name {
			case "another arch":
				arches = append(arches, "arm64")
				at = f.attacks("")[2]
				// The daemon may ask before the arm64 build is done: the
				// proxy holds the request until the arm64 artifact exists.
				proxy.set(func(r *http.Request) {
					if artifactRequest(r, "schedcount") {
						f.readyArtifact("schedcount", r.URL.Query().Get("revision"), f.armKernel)
						at.rewrite(r)
					}
				}, nil)
			case "another program", "another kernel":
				for _, a := range f.attacks("") {
					if a.name == name {
						at = a
					}
				}
				proxy.set(at.rewrite, nil)
			case "another revision":
				// The server desires rev; the proxy answers with revision 1.
				proxy.set(otherQuery("schedcount", "revision", f.rev1), nil)
			case "an older revision":
				// The proxy forges the desired state: revision 1, unpinned.
				proxy.set(nil, forgeDesired(schedcount(t, func(s string) string { return s + next }).Digest(), f.rev1))
			}
			rev := f.pushArches("schedcount", schedcount(t, func(s string) string { return s + next }), arches...)
			switch name {
			case "another revision":
				at.want = "asked for revision " + rev[:12] + ", the signed manifest is for revision " + f.rev1[:12]
			case "an older revision":
				at.want = "revision " + f.rev1[:12] + " is older than revision " + f.rev2[:12]
			}
			// The server desires rev; the agent refuses what the proxy
			// gives, and revision 2 keeps running, untouched.
			h := f.waitHost("attacked-host", at.name+" refused", func(h *api.Host) bool {
				p := hostProgram(h, "schedcount")
				return p != nil && p.State == api.HostProgramRolledBack && strings.Contains(p.Error, at.want)
			})
			p := hostProgram(h, "schedcount")
			if p.Revision != f.rev2 || strings.Contains(p.Error, "\n") {
				t.Errorf("%s: reported %+v; want revision 2 running and one line", at.name, p)
			}
			if rev, now := linkIDs(t, cfg, "schedcount"); rev != f.rev2 || !sameIDs(ids, now) {
				t.Errorf("%s: revision %s links %v running, want revision 2 links %v", at.name, rev, now, ids)
			}
			if entries, _ := os.ReadDir(cfg.PinDir); len(entries) != 1 {
				t.Errorf("%s: the pin directory holds %d entries, want schedcount's only", at.name, len(entries))
			}
			requireCounting(t, cfg)
		}

		// The proxy honest again: the server, still serving, gets the
		// daemon onto its newest revision.
		proxy.set(nil, nil)
		rev := f.pushArches("schedcount", schedcount(t, func(s string) string { return s + "\n/* honest again */\n" }), "x86_64")
		f.waitHost("attacked-host", "the newest revision loaded", func(h *api.Host) bool {
			p := hostProgram(h, "schedcount")
			return p != nil && p.State == api.HostProgramLoaded && p.Revision == rev
		})
	})
}

// TestAsmLabelEscape: BPF C whose map or program is named "../../x" with
// an asm label, compiled by the real farm, fails to build as the user's
// error, with one line; the server keeps serving.
func TestAsmLabelEscape(t *testing.T) {
	requireDaemonEnv(t)
	f := startFarm(t)
	ctx := context.Background()
	for _, c := range []struct{ name, src, want string }{
		{"escape-map", `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} counts __asm__("../../x") SEC(".maps");
SEC("tp/syscalls/sys_enter_openat")
int count(void *ctx)
{
	u32 key = 0;
	u64 *v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}
`, `map name "../../x" is not a C identifier`},
		{"escape-prog", `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
int count(void *ctx) __asm__("../../x");
SEC("tp/syscalls/sys_enter_openat")
int count(void *ctx)
{
	return 0;
}
`, `program name "../../x" is not a C identifier`},
	} {
		b, err := bpfsrc.New(c.name+".bpf.c", []bpfsrc.File{{Name: c.name + ".bpf.c", Data: []byte(c.src)}}, bpfsrc.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.admin.Push(ctx, c.name, b, client.PushOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range res.Builds {
			done, err := f.admin.WaitBuild(ctx, b.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if done.State != api.StateFailed || done.ErrorKind != "user" || !strings.Contains(done.Error, c.want) ||
				strings.Contains(done.Error, "\n") {
				t.Errorf("%s: build %s (%s): %q; want a user error, one line with %q", c.name, done.State, done.ErrorKind, done.Error, c.want)
			}
		}
		if as, err := f.admin.Artifacts(ctx, c.name, ""); err != nil || len(as) != 0 {
			t.Errorf("%s: artifacts %v %v; want none", c.name, as, err)
		}
	}
	// The server keeps serving: a good program builds.
	f.push("schedcount", schedcount(t, nil))
}

// buildAgent builds the static bpfarm-agent binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bpfarm-agent")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/bpfarm-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build bpfarm-agent: %v\n%s", err, out)
	}
	return bin
}
