package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/web"
)

// Screenshots: BPFARM_UI_SHOTS=1 saves PNGs of every page at desktop and
// phone width into shotsDir (outside the repository).
const (
	shotsEnv = "BPFARM_UI_SHOTS"
	shotsDir = "/tmp/bpfarm-ui-shots"
)

// chrome drives a headless Chromium through chromedp.
type chrome struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func chromiumPath(t *testing.T) string {
	p := os.Getenv("BPFARM_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		testenv.Require(t, "chromium", fmt.Sprintf("%s: %v (make deps installs Debian's chromium)", p, err))
	}
	return p
}

func newBrowser(t *testing.T, base string) *chrome {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first run starts the browser: no deadline on it (see chromedp.Run).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &chrome{t: t, ctx: ctx, base: base}
}

// fail saves a screenshot outside the repository and fails the test,
// naming the file.
func (b *chrome) fail(format string, args ...any) {
	b.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil {
		msg += " [at " + loc + "]"
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("%s (no screenshot: %v)", msg, err)
	}
	f, err := os.CreateTemp(os.TempDir(), "bpfarm-ui-*.png")
	if err != nil {
		b.t.Fatalf("%s (no screenshot: %v)", msg, err)
	}
	f.Write(png)
	f.Close()
	b.t.Fatalf("%s (screenshot: %s)", msg, f.Name())
}

// do runs steps, failing the test with a screenshot when one fails or the
// deadline (a guard against hanging, not a timing assertion) passes.
func (b *chrome) do(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

func (b *chrome) text(what, sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.fail("%s: %v", what, err)
	}
	return s
}

func (b *chrome) eval(what, js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.fail("%s: %v", what, err)
	}
	return s
}

func (b *chrome) visit(path string, waitFor string) {
	b.t.Helper()
	b.do("open "+path, time.Minute, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(waitFor)))
}

// shot is one screenshot: a page, optionally prepared (a cell opened, a
// part scrolled into view).
type shot struct {
	name, path, wait string
	prepare          []chromedp.Action[chromedp.Void]
}

// screenshots saves each page at desktop (1366×900) and phone (390×844)
// width when BPFARM_UI_SHOTS is set.
func (b *chrome) screenshots(shots []shot) {
	b.t.Helper()
	if os.Getenv(shotsEnv) == "" {
		return
	}
	if err := os.MkdirAll(shotsDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	for _, vp := range []struct {
		tag  string
		w, h int64
		opts []chromedp.EmulateViewportOption
	}{
		{"desktop", 1366, 900, nil},
		{"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(1), chromedp.EmulateMobile, chromedp.EmulatePortrait}},
	} {
		for _, s := range shots {
			steps := []chromedp.Action[chromedp.Void]{chromedp.EmulateViewport(vp.w, vp.h, vp.opts...),
				chromedp.Navigate(b.base + s.path), chromedp.WaitVisible(chromedp.CSS(s.wait))}
			b.do("screenshot "+s.name, time.Minute, append(steps, s.prepare...)...)
			ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
			png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
			cancel()
			if err != nil {
				b.fail("screenshot %s: %v", s.name, err)
			}
			p := filepath.Join(shotsDir, s.name+"-"+vp.tag+".png")
			if err := os.WriteFile(p, png, 0o644); err != nil {
				b.t.Fatal(err)
			}
			b.t.Logf("screenshot %s", p)
		}
	}
	b.do("reset viewport", time.Minute, chromedp.EmulateViewport(1366, 900))
}

// startServer runs a real server in-process on a loopback port, with this
// host's kernel imported into its archive; it returns the server, its URL
// and the admin token.
func startServer(t *testing.T) (*server.Server, string, string) {
	t.Helper()
	s, base, tok := runServer(t, server.Config{Workers: 2})
	ctx := context.Background()
	// This host's kernel, through the archive, so that builds get artifacts.
	k, err := source.Host(source.Options{TempDir: t.TempDir()})
	if err != nil {
		testenv.Require(t, "host kernel BTF", err.Error())
	}
	if _, err := s.Archive.Store(ctx, k, archive.ImportOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	return s, base, tok
}

// runServer runs a real server in-process on a loopback port with cfg
// (Data, Listener, Out and Logger filled in) and the UI mounted as
// cmd/bpfarm mounts it, and waits until it is ready; it returns the
// server, its URL and the admin token.
func runServer(t *testing.T, cfg server.Config) (*server.Server, string, string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/clang-19"); err != nil {
		testenv.Require(t, "clang-19", "the server compiles with clang-19 (make deps installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	cfg.Data, cfg.Listener, cfg.Out = data, ln, io.Discard
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// As cmd/bpfarm composes them: the UI over the server's services.
	set := s.Settings()
	s.MountUI(web.New(web.Config{DB: s.DB, Blobs: s.Blobs, Builds: s.Builds, Intake: s.Intake, Key: s.Key,
		Logger: set.Logger, AnonymousRead: set.AnonymousRead, TempDir: s.TempDir()}))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, base, strings.TrimSpace(string(tok))
}

// oldKernelID names a kernel made of this host's BTF without
// BPF_MAP_TYPE_RINGBUF: like Ubuntu 18.04's 4.15, it has no ring buffers.
const oldKernelID = "ubuntu/18.04/x86_64/4.15.0-20-generic"

// importOldKernel imports the old kernel into s's archive.
func importOldKernel(t *testing.T, s *server.Server) {
	t.Helper()
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		testenv.Require(t, "host kernel BTF", err.Error())
	}
	old, err := testenv.OldKernelBTF(raw, []string{"BPF_MAP_TYPE_RINGBUF"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := kernel.ParseID(oldKernelID)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Archive.Store(ctx, &source.Kernel{ID: id, BTF: old, Source: "test: this host's BTF without BPF_MAP_TYPE_RINGBUF"},
		archive.ImportOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
}

// poisonSource reads a field no kernel has, unguarded: relocating it
// poisons read_missing, while read_pid stays ok.
const poisonSource = `// SPDX-License-Identifier: GPL-2.0
/* poison: a CO-RE read of a field that does not exist. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct task_struct___x {
	int bpfarm_nonexistent;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} seen SEC(".maps");

SEC("tp/syscalls/sys_enter_openat")
int read_missing(void *ctx)
{
	struct task_struct___x *t = (void *)bpf_get_current_task();
	u32 key = 0;
	u64 *v = bpf_map_lookup_elem(&seen, &key);

	if (v)
		*v = BPF_CORE_READ(t, bpfarm_nonexistent);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int read_pid(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	u32 key = 1;
	u64 *v = bpf_map_lookup_elem(&seen, &key);

	if (v)
		*v = BPF_CORE_READ(t, tgid);
	return 0;
}
`

// upload fills the upload form and returns once the build page shows the
// build finished in state want (the page reloads itself when the build
// and its relocations are done).
func (b *chrome) upload(name, want string, files ...string) string {
	b.t.Helper()
	b.visit("/upload", "#files")
	b.do("fill the upload form for "+name, time.Minute,
		chromedp.SetValue(chromedp.CSS("#name"), name),
		chromedp.SetUploadFiles(chromedp.CSS("#files"), files),
		chromedp.Click(chromedp.CSS(`#upload-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#build-state")),
	)
	b.do("wait for the build of "+name+" to finish", 10*time.Minute,
		chromedp.WaitVisible(chromedp.CSS(`body:not([data-live]) #build-state[data-state="succeeded"], `+
			`body:not([data-live]) #build-state[data-state="failed"]`)))
	if st := b.eval("build state", `document.querySelector("#build-state").dataset.state`); st != want {
		b.fail("build of %s: %s, want %s: %s", name, st, want, b.text("build page", "main"))
	}
	return b.eval("build page", "location.pathname")
}

// TestBrowser drives the UI end to end in Chromium: sign in, upload two
// programs, follow their builds, open the coverage matrix and a poisoned
// cell, compare revisions, and download an artifact file whose sha256 must
// match the manifest the page shows.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser and compiles")
	}
	chromiumPath(t)
	srv, base, token := startServer(t)
	importOldKernel(t, srv)
	b := newBrowser(t, base)

	// Anonymous visitors land on the sign-in page; sign in with the token.
	b.visit("/", "#token")
	b.do("sign in", time.Minute,
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`.signin button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`nav a[href="/upload"]`)),
	)
	if p := b.eval("path after sign-in", "location.pathname"); p != "/" {
		b.fail("after sign-in at %s", p)
	}
	// The session cookie is HttpOnly: scripts cannot read it.
	if c := b.eval("cookies", "document.cookie"); strings.Contains(c, "bpfarm_session") {
		b.fail("session cookie readable by scripts: %q", c)
	}

	// Upload execsnoop (a .bpf.c and its header) through the form.
	ex, err := filepath.Abs(filepath.Join("..", "examples", "execsnoop"))
	if err != nil {
		t.Fatal(err)
	}
	buildPath := b.upload("execsnoop", "succeeded", filepath.Join(ex, "execsnoop.bpf.c"), filepath.Join(ex, "execsnoop.h"))
	if !strings.HasPrefix(buildPath, "/builds/") {
		b.fail("upload led to %s", buildPath)
	}
	if got := b.text("object programs", "#object ~ table"); !strings.Contains(got, "handle_exec") ||
		!strings.Contains(got, "tp/sched/sched_process_exec") {
		b.fail("object inspection: %q", got)
	}
	if log := b.text("build log", "pre.log:not(.live)"); !strings.Contains(log, "OK") {
		b.fail("build log: %q", log)
	}

	// On the old kernel without ring buffers, execsnoop's cells are
	// unsupported, and one opens on the reason.
	b.visit("/programs/execsnoop", "#coverage")
	b.do("wait for execsnoop's relocations", 5*time.Minute,
		chromedp.WaitVisible(chromedp.CSS(`body:not([data-live]) td.c.s-unsupported summary`)))
	b.do("open the unsupported cell", time.Minute,
		chromedp.Click(chromedp.CSS(`td.c.s-unsupported summary`)),
		chromedp.WaitVisible(chromedp.CSS(`td.c.s-unsupported details[open] .pop`)))
	if pop := b.text("unsupported cell", `td.c.s-unsupported details[open] .pop`); !strings.Contains(pop,
		"map events: ring buffer (BPF_MAP_TYPE_RINGBUF) is not in this kernel") {
		b.fail("unsupported cell says %q", pop)
	}
	unsupportedShot := b.eval("matrix path", "location.pathname + location.search")

	// A program with an unguarded read of a field no kernel has.
	dir := t.TempDir()
	poison := filepath.Join(dir, "poison.bpf.c")
	if err := os.WriteFile(poison, []byte(poisonSource), 0o644); err != nil {
		t.Fatal(err)
	}
	b.upload("poison", "succeeded", poison)

	// Its coverage matrix: the host kernel's row has a poisoned cell and an
	// ok one. Open the poisoned cell.
	b.visit("/programs/poison", "#coverage")
	b.do("wait for the relocations", 5*time.Minute,
		chromedp.WaitVisible(chromedp.CSS(`body:not([data-live]) td.c.s-poisoned summary`)))
	b.do("see an ok cell", time.Minute, chromedp.WaitVisible(chromedp.CSS(`td.c.s-ok`)))
	b.do("open the poisoned cell", time.Minute,
		chromedp.Click(chromedp.CSS(`td.c.s-poisoned summary`)),
		chromedp.WaitVisible(chromedp.CSS(`td.c.s-poisoned details[open] .pop`)))
	pop := b.text("poisoned cell", `td.c.s-poisoned details[open] .pop`)
	if !strings.Contains(pop, "bpfarm_nonexistent") || !strings.Contains(pop, "unguarded") {
		b.fail("poisoned cell says %q", pop)
	}
	// Escape closes it again (keyboard).
	b.do("close the cell with Escape", time.Minute,
		chromedp.SendKeys(chromedp.CSS(`td.c.s-poisoned summary`), "\x1b"),
		chromedp.WaitNotPresent(chromedp.CSS(`td.c.s-poisoned details[open]`)))
	b.do("reopen the cell", time.Minute,
		chromedp.Click(chromedp.CSS(`td.c.s-poisoned summary`)),
		chromedp.WaitVisible(chromedp.CSS(`td.c.s-poisoned details[open] .pop a`)))
	matrixShot := b.eval("matrix path", "location.pathname + location.search")

	// Its artifact: download the pre-relocated object and check its sha256
	// against the manifest the page shows.
	b.do("open the artifact", time.Minute,
		chromedp.Click(chromedp.CSS(`td.c.s-poisoned details[open] .pop a`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-role="relocated"] a.button`)))
	artifactPath := b.eval("artifact path", "location.pathname")
	shown := strings.TrimSpace(b.text("relocated sha256", `tr[data-role="relocated"] code.sha256`))
	var m manifest.Manifest
	if err := json.Unmarshal([]byte(b.text("manifest", "pre.json")), &m); err != nil {
		b.fail("manifest shown: %v", err)
	}
	if m.Files[manifest.FileRelocated].SHA256 != shown {
		b.fail("files table says %s, manifest %s", shown, m.Files[manifest.FileRelocated].SHA256)
	}
	if !strings.Contains(b.text("signature", "#signature ~ dl"), "verifies with this server's key") {
		b.fail("signature not verified")
	}
	dl := t.TempDir()
	progress := chromedp.Events(b.ctx, browser.DownloadProgress)
	begin := chromedp.Events(b.ctx, browser.DownloadWillBegin)
	b.do("download the relocated object", time.Minute,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dl, EventsEnabled: ptr(true)})
			return err
		}),
		chromedp.Click(chromedp.CSS(`tr[data-role="relocated"] a.button`)))
	var suggested string
	for ev, err := range begin {
		if err != nil {
			b.fail("download: %v", err)
		}
		suggested = ev.SuggestedFilename
		break
	}
	var guid string
	dlCtx, dlCancel := context.WithTimeout(b.ctx, 2*time.Minute)
	for ev, err := range progress {
		if err != nil || dlCtx.Err() != nil {
			dlCancel()
			b.fail("download: %v %v", err, dlCtx.Err())
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			dlCancel()
			b.fail("download canceled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
	}
	dlCancel()
	data, err := os.ReadFile(filepath.Join(dl, guid))
	if err != nil {
		b.fail("downloaded file: %v", err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != shown || int64(len(data)) != m.Files[manifest.FileRelocated].Size {
		b.fail("downloaded %d bytes with sha256 %s; the manifest says %d bytes, %s", len(data), got,
			m.Files[manifest.FileRelocated].Size, shown)
	}
	if suggested != "poison.relocated.bpf.o" {
		b.fail("download named %q", suggested)
	}

	// A second revision, and the diff between the two.
	v2 := strings.Replace(poisonSource, "/* poison: a CO-RE read of a field that does not exist. */",
		"/* poison: a CO-RE read of a field that does not exist,\n * and of one that does. */", 1)
	if err := os.WriteFile(poison, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	b.upload("poison", "succeeded", poison)
	b.visit("/programs/poison", ".diffform button")
	b.do("compare revisions", time.Minute,
		chromedp.Click(chromedp.CSS(".diffform button")),
		chromedp.WaitVisible(chromedp.CSS("table.diff")))
	diff := b.text("diff", "table.diff")
	if !strings.Contains(diff, "and of one that does") || !strings.Contains(diff, "@@ -1,") {
		b.fail("diff: %q", diff)
	}
	diffPath := b.eval("diff path", "location.pathname + location.search")

	// A program that does not compile: the build page lists clang's
	// diagnostics at the file's own line and column.
	broken, err := filepath.Abs(filepath.Join("..", "examples", "broken", "broken.bpf.c"))
	if err != nil {
		t.Fatal(err)
	}
	brokenPath := b.upload("broken", "failed", broken)
	diags := b.text("diagnostics", "table.diags")
	if !strings.Contains(diags, "broken.bpf.c:") || !strings.Contains(diags, "error") {
		b.fail("diagnostics: %q", diags)
	}

	// A host, for the hosts page.
	ctx := context.Background()
	hostKernel := ""
	if ks, err := srv.DB.Kernels(ctx, ""); err == nil && len(ks) > 0 {
		hostKernel = ks[0].KID
		if hostKernel == oldKernelID && len(ks) > 1 {
			hostKernel = ks[1].KID
		}
	}
	if _, err := srv.DB.RegisterHost(ctx, api.HostRegistration{Name: "web-1", Hostname: "web-1.example", Kernel: hostKernel,
		Labels: map[string]string{"env": "prod", "role": "web"}, HasBTF: true, AgentVersion: "dev"}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.DB.AddAssignment(ctx, api.AssignmentRequest{Program: "execsnoop", Selector: map[string]string{"role": "web"}}, "admin"); err != nil {
		t.Fatal(err)
	}
	b.visit("/hosts", "table.hosts")
	if got := b.text("hosts", "table.hosts"); !strings.Contains(got, "web-1") || !strings.Contains(got, "execsnoop") {
		b.fail("hosts page: %q", got)
	}

	b.screenshots([]shot{
		{name: "programs", path: "/", wait: "table.programs"},
		{name: "program-matrix", path: matrixShot, wait: "#coverage", prepare: []chromedp.Action[chromedp.Void]{
			chromedp.ScrollIntoView(chromedp.CSS("#coverage")),
			chromedp.Click(chromedp.CSS(`td.c.s-poisoned summary`)),
			chromedp.WaitVisible(chromedp.CSS(`td.c.s-poisoned details[open] .pop`))}},
		{name: "program-unsupported", path: unsupportedShot, wait: "#coverage", prepare: []chromedp.Action[chromedp.Void]{
			chromedp.ScrollIntoView(chromedp.CSS("#coverage")),
			chromedp.Click(chromedp.CSS(`td.c.s-unsupported summary`)),
			chromedp.WaitVisible(chromedp.CSS(`td.c.s-unsupported details[open] .pop`))}},
		{name: "diff", path: diffPath, wait: "table.diff"},
		{name: "build", path: buildPath, wait: "#build-state"},
		{name: "build-failed", path: brokenPath, wait: "table.diags"},
		{name: "build-object", path: buildPath, wait: "#object", prepare: []chromedp.Action[chromedp.Void]{
			chromedp.ScrollIntoView(chromedp.CSS("#object"))}},
		{name: "artifact", path: artifactPath, wait: "#files"},
		{name: "kernels", path: "/kernels", wait: "#bydistro"},
		{name: "kernel", path: "/kernels/" + hostKernel, wait: "#programs"},
		{name: "hosts", path: "/hosts", wait: "table.hosts"},
		{name: "upload", path: "/upload", wait: "#files"},
	})

	// Sign out: the session ends, and pages ask to sign in again.
	b.visit("/", "nav")
	b.do("sign out", time.Minute,
		chromedp.Click(chromedp.CSS(`.who button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#token")))
	b.screenshots([]shot{{name: "signin", path: "/signin", wait: "#token"}})
	b.visit("/kernels", "#token")
}

// TestScreenshotsAtScale screenshots the pages of a seeded archive (1000
// kernels × 50 programs), where the matrix and the lists are long, when
// BPFARM_UI_SHOTS is set.
func TestScreenshotsAtScale(t *testing.T) {
	if os.Getenv(shotsEnv) == "" {
		t.Skipf("%s is not set", shotsEnv)
	}
	h, s, token := web.SeededUI(t, web.SeedOptions{})
	ts := httptest.NewServer(h)
	defer ts.Close()
	b := newBrowser(t, ts.URL)
	b.visit("/signin", "#token")
	b.do("sign in", time.Minute,
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`.signin button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("table.programs")))
	b.screenshots([]shot{
		{name: "scale-programs", path: "/", wait: "table.programs"},
		{name: "scale-program", path: "/programs/" + s.Program, wait: "#coverage"},
		{name: "scale-matrix", path: "/programs/" + s.Program, wait: "#coverage", prepare: []chromedp.Action[chromedp.Void]{
			chromedp.ScrollIntoView(chromedp.CSS(".matrix-wrap")),
			chromedp.Click(chromedp.CSS(`td.c.s-poisoned summary`)),
			chromedp.WaitVisible(chromedp.CSS(`td.c.s-poisoned details[open] .pop`))}},
		{name: "scale-matrix-scrolled", path: "/programs/" + s.Program + "?only=problems", wait: "#coverage", prepare: []chromedp.Action[chromedp.Void]{
			chromedp.ScrollIntoView(chromedp.CSS(".matrix-wrap")),
			js(`(() => { const w = document.querySelector(".matrix-wrap"); w.scrollTop = 400; w.scrollLeft = 200; return true; })()`)}},
		{name: "scale-build", path: fmt.Sprintf("/builds/%d", s.BuildID), wait: "#build-state"},
		{name: "scale-artifact", path: fmt.Sprintf("/artifacts/%d", s.ArtifactID), wait: "#files"},
		{name: "scale-kernels", path: "/kernels", wait: "#bydistro"},
		{name: "scale-kernels-list", path: "/kernels", wait: "#all", prepare: []chromedp.Action[chromedp.Void]{
			chromedp.ScrollIntoView(chromedp.CSS("#all"))}},
		{name: "scale-kernel", path: "/kernels/" + s.Kernel, wait: "#programs"},
		{name: "scale-hosts", path: "/hosts", wait: "table.hosts"},
		{name: "scale-diff", path: "/programs/" + s.Program + "/diff?from=" + s.RevFrom + "&to=" + s.RevTo, wait: "table.diff"},
	})
}

func ptr[T any](v T) *T { return &v }

// js is a step that runs a script returning true.
func js(src string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](src)(ctx, t)
		return err
	})
}
