// Package agent is bpfarm-agent's daemon (`bpfarm-agent run`): it
// registers the host with the server, long-polls the host's desired state
// (which programs at which revisions, with which load options), and
// converges the host onto it with package loader, reporting every
// program's state back.
//
// Convergence: a desired program that does not run at the desired revision
// (or with the desired options) is fetched — verified against the pinned
// signing key, and kept in a local cache of last good artifacts — then
// loaded the first time, or swapped in (the new revision attached before
// the old one is detached) when another revision runs. When a new revision
// cannot be fetched, verified, loaded or attached, the last good revision
// keeps running (or is restored from the cache if the failed swap took it
// down) and the program is reported rolled_back with the error; the
// refused revision is not tried again until the desired state changes.
// Programs no longer desired are unloaded.
//
// Outages: when the server cannot be reached, everything keeps running and
// the agent retries with exponential backoff and jitter; nothing is ever
// unloaded for lack of an answer. Restarts: everything pinned is adopted
// (nothing is detached), managed programs whose pins vanished are loaded
// again from the cache, and on SIGTERM the agent exits leaving every
// program loaded, attached and pinned.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/client/export"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/internal/fsutil"
	"github.com/bpfarm/bpfarm/manifest"
)

// Version is the agent version reported at registration.
var Version = "dev"

// Loader is what the agent needs of package loader; DefaultLoader
// implements it with the real loader.
type Loader interface {
	Load(ctx context.Context, a *loader.Artifact, opt loader.Options) (*loader.Loaded, error)
	Swap(ctx context.Context, old *loader.Loaded, a *loader.Artifact, opt loader.Options) (*loader.Loaded, error)
	Unload(name string, opt loader.Options) error
	Adopt(name string, opt loader.Options) (*loader.Loaded, error)
	Status(opt loader.Options) ([]loader.Loaded, error)
}

// Fetcher fetches verified artifacts; *client.Client implements it.
type Fetcher interface {
	FetchArtifact(ctx context.Context, program, kernelID, revision string, opt client.FetchOptions) (*client.Fetched, error)
}

// Options are an Agent's collaborators; zero fields get the real ones.
type Options struct {
	// Loader loads programs (default DefaultLoader).
	Loader Loader
	// Fetcher fetches artifacts (default: the server's client).
	Fetcher Fetcher
	// Logger logs (default slog.Default()).
	Logger *slog.Logger
	// Registry receives the agent's metrics (default: a private registry,
	// served at Config.MetricsAddr when set).
	Registry *prometheus.Registry
	// Host describes the host (default kernel.Host()).
	Host *kernel.HostInfo
}

// Agent is the daemon. Use New, then Run.
type Agent struct {
	cfg     Config
	c       *client.Client
	fetcher Fetcher
	loader  Loader
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *metrics
	export  *export.Exporter
	host    kernel.HostInfo
	hostID  string

	pubMu sync.Mutex
	pub   ed25519.PublicKey

	mu          sync.Mutex
	metricsAddr string // where /metrics is served, once it is
	programs    map[string]*program
	registered  bool
	saved       savedState
	reportNow   chan struct{}
}

// program is what the agent knows of one program set.
type program struct {
	name string
	// loaded is the running set (nil when nothing runs).
	loaded   *loader.Loaded
	revision string // running revision
	kernel   string // archive kernel id the running artifact was fetched for
	options  api.LoadOptions
	optsKey  string
	// managed: the agent loaded it for an assignment (else it was loaded
	// by hand, and is only reported).
	managed bool
	// broken: adopted with a program detached or a pin gone: load again.
	broken  bool
	desired *api.DesiredProgram
	// refused is the desired revision+options the agent gave up on; it is
	// not tried again until the desired state changes.
	refused string
	// retry: the last attempt failed for a reason that may pass (server
	// unreachable): try again after a backoff.
	retry bool
	state string
	err   string
	since time.Time
	// exports are the statuses of the maps the program exports, for the
	// set exportedSet with the exports named by exportsKey.
	exports     []api.ExportStatus
	exportedSet *loader.Loaded
	exportsKey  string
}

// savedState is what the agent keeps in STATE_DIR/agent.json across
// restarts.
type savedState struct {
	// Managed are the programs the agent loaded for assignments.
	Managed map[string]savedProgram `json:"managed"`
	// Desired is the last desired state the server gave, converged onto
	// from the cache when the agent starts without a server.
	Desired *api.DesiredState `json:"desired,omitempty"`
}

type savedProgram struct {
	Revision string          `json:"revision"`
	Kernel   string          `json:"kernel"`
	Options  api.LoadOptions `json:"options"`
}

// New returns an agent for cfg (see Config for defaults).
func New(cfg Config, opt Options) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg.Server, cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	c.UserAgent = "bpfarm-agent/" + Version
	a := &Agent{cfg: cfg, c: c, fetcher: opt.Fetcher, loader: opt.Loader, log: opt.Logger,
		reg: opt.Registry, programs: map[string]*program{}, reportNow: make(chan struct{}, 1)}
	if a.fetcher == nil {
		a.fetcher = c
	}
	if a.loader == nil {
		a.loader = DefaultLoader{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log = a.log.With("host", cfg.Name)
	if a.reg == nil {
		a.reg = prometheus.NewRegistry()
	}
	a.m = newMetrics(a.reg)
	if a.export, err = export.New(export.Options{Host: cfg.Name, Logger: a.log, Registerer: a.reg}); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if opt.Host != nil {
		a.host = *opt.Host
	} else if a.host, err = kernel.Host(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent state directory: %w", err)
	}
	if a.hostID, err = hostID(cfg.StateDir); err != nil {
		return nil, err
	}
	if cfg.PublicKey != "" {
		if a.pub, err = manifest.ReadPublicKeyFile(cfg.PublicKey); err != nil {
			return nil, fmt.Errorf("agent config: public key: %w", err)
		}
	}
	a.saved = a.loadSaved()
	return a, nil
}

// Run registers and converges until ctx is done. It returns nil on a clean
// stop, leaving every program loaded, attached and pinned.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent starting", "server", a.c.Server(), "kernel", a.host.ID, "labels", a.cfg.Labels,
		"pin_dir", a.cfg.PinDir, "version", Version)
	if a.cfg.MetricsAddr != "" {
		stop, err := a.serveMetrics()
		if err != nil {
			return err
		}
		defer stop()
	}
	defer a.export.Close()
	a.adoptAll(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.reportLoop(ctx)
	}()
	defer wg.Wait()

	var (
		version      uint64
		errs         = backoff{min: a.cfg.Poll.BackoffMin, max: a.cfg.Poll.BackoffMax}
		retries      = backoff{min: a.cfg.Poll.BackoffMin, max: a.cfg.Poll.BackoffMax}
		offlineTried bool
		uploaded     bool
	)
	for ctx.Err() == nil {
		if !a.isRegistered() {
			host, err := a.register(ctx)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				d := errs.next()
				a.log.Warn("cannot register with the server; everything loaded keeps running", "err", err, "retry_in", d)
				if !offlineTried {
					offlineTried = true
					a.convergeOffline(ctx)
				}
				sleep(ctx, d)
				continue
			}
			if !uploaded {
				if uploaded = a.maybeUploadBTF(ctx, host); !uploaded {
					// A failure that may pass: register and upload again
					// after a backoff (meanwhile nothing changes here).
					a.setRegistered(false)
					sleep(ctx, errs.next())
					continue
				}
			}
			errs.reset()
		}
		wait := a.cfg.Poll.Wait
		if a.retryPending() {
			wait = min(wait, retries.next())
		} else {
			retries.reset()
		}
		ds, err := a.c.Desired(ctx, a.cfg.Name, version, wait)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			a.m.pollErrors.Inc()
			if client.IsNotFound(err) {
				a.setRegistered(false) // the server forgot this host: register again
			}
			d := errs.next()
			a.log.Warn("cannot get the desired state; everything loaded keeps running", "err", err, "retry_in", d)
			sleep(ctx, d)
			continue
		}
		errs.reset()
		if ds.Version != version || a.retryPending() {
			a.converge(ctx, ds, false)
			version = ds.Version
		}
	}
	a.log.Info("agent stopping; loaded programs stay loaded, attached and pinned")
	return nil
}

func (a *Agent) isRegistered() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.registered
}

func (a *Agent) setRegistered(v bool) {
	a.mu.Lock()
	a.registered = v
	a.mu.Unlock()
	if v {
		a.kickReport()
	}
}

// register registers the host and returns the server's view of it.
func (a *Agent) register(ctx context.Context) (*api.Host, error) {
	hostname, _ := os.Hostname()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h, err := a.c.Register(rctx, api.HostRegistration{Name: a.cfg.Name, HostID: a.hostID, Hostname: hostname,
		Kernel: a.host.ID.String(), Build: a.host.Build, Labels: a.cfg.Labels, HasBTF: a.host.HasBTF,
		AgentVersion: Version})
	if err != nil {
		return nil, err
	}
	a.log.Info("registered", "kernel", h.Kernel, "archive_kernel", h.ArchiveKernel)
	a.setRegistered(true)
	return h, nil
}

// maybeUploadBTF gives the server this host's kernel BTF when its archive
// lacks the kernel and the config allows it. It reports whether nothing
// is left to do.
func (a *Agent) maybeUploadBTF(ctx context.Context, h *api.Host) bool {
	if h.ArchiveKernel != "" || !a.cfg.UploadBTF {
		if h.ArchiveKernel == "" {
			a.log.Warn("the server's archive lacks this host's kernel: no artifact can be relocated for it "+
				"(set upload_btf, or import it: bpfarm kernels import --host)", "kernel", h.Kernel)
		}
		return true
	}
	if !a.host.HasBTF {
		a.log.Warn("the server's archive lacks this host's kernel, and the kernel has no BTF to upload", "kernel", h.Kernel)
		return true
	}
	k, err := source.Host(source.Options{})
	if err != nil {
		a.log.Warn("read this host's BTF", "err", err)
		return true
	}
	res, err := a.c.ImportKernel(ctx, k, client.ImportOptions{ID: a.host.ID})
	if err != nil {
		permanent := !client.IsTransient(err)
		a.log.Warn("upload this host's BTF", "err", err, "retry", !permanent)
		return permanent
	}
	queued := 0
	for _, k := range res.Kernels {
		queued += k.Queued
	}
	a.log.Info("uploaded this host's kernel BTF; the server relocates artifacts for it", "kernel", a.host.ID, "queued", queued)
	return true
}

// publicKey returns the pinned signing key: from the config, else pinned
// in CacheDir on first use.
func (a *Agent) publicKey(ctx context.Context) (ed25519.PublicKey, error) {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	if a.pub != nil {
		return a.pub, nil
	}
	pub, pinned, err := a.c.PinnedKey(ctx, "", a.cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	if pinned {
		a.log.Warn("pinned the server's signing key on first use; set public_key to pin it explicitly",
			"key_id", manifest.KeyID(pub), "file", filepath.Join(a.cfg.CacheDir, client.PinnedKeyFile))
	}
	a.pub = pub
	return pub, nil
}

// loaderOptions are the loader options of a desired program.
func (a *Agent) loaderOptions(o api.LoadOptions, revision string) loader.Options {
	return loader.Options{PinDir: a.cfg.PinDir, StateDir: a.cfg.RunDir, Programs: o.Programs, NoAttach: o.NoAttach,
		Set: o.Set, MaxEntries: o.MaxEntries, KernelBTF: a.cfg.KernelBTF, Mode: loader.Mode(a.cfg.Mode), Revision: revision,
		Attach: loader.AttachOptions{Interface: o.Attach.Interface, XDPMode: o.Attach.XDPMode, TCDirection: o.Attach.TCDirection,
			CgroupPath: o.Attach.CgroupPath, PerfFreq: o.Attach.PerfFreq, UprobePID: o.Attach.UprobePID}}
}

func (a *Agent) baseOptions() loader.Options {
	return loader.Options{PinDir: a.cfg.PinDir, StateDir: a.cfg.RunDir, KernelBTF: a.cfg.KernelBTF, Mode: loader.Mode(a.cfg.Mode)}
}

// adoptAll takes over every set pinned under PinDir: nothing is detached.
// Managed sets that are gone or broken are loaded again by convergence
// (from the cache when the server is unreachable).
func (a *Agent) adoptAll(ctx context.Context) {
	ls, err := a.loader.Status(a.baseOptions())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("list loaded programs", "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range ls {
		st := &ls[i]
		p := a.program(st.Name)
		l, err := a.loader.Adopt(st.Name, a.baseOptions())
		if err != nil {
			// Something of it vanished (a pin removed, a link detached):
			// keep what Status found, and load it again (a swap).
			a.log.Warn("adopt a loaded program: it is incomplete and will be loaded again", "program", st.Name, "err", err)
			l, p.broken = st, true
		}
		p.loaded, p.revision, p.state, p.since = l, l.Revision, api.HostProgramLoaded, l.Since.UTC()
		if err != nil {
			p.err = "adopt: " + err.Error()
		}
		if sp, ok := a.saved.Managed[st.Name]; ok {
			p.managed, p.kernel = true, sp.Kernel
			if sp.Revision == l.Revision {
				p.options, p.optsKey = sp.Options, optionsKey(sp.Options)
			}
		}
		a.m.adopted.Inc()
		a.log.Info("adopted a loaded program", "program", st.Name, "revision", short(l.Revision), "managed", p.managed,
			"broken", p.broken)
	}
}

// program returns the entry of name, creating it. a.mu must be held.
func (a *Agent) program(name string) *program {
	p := a.programs[name]
	if p == nil {
		p = &program{name: name}
		a.programs[name] = p
	}
	return p
}

// convergeOffline loads, from the cache, the managed programs of the last
// desired state that are not running (after a reboot, the pins are gone)
// when the server cannot be reached at start. It unloads nothing.
func (a *Agent) convergeOffline(ctx context.Context) {
	a.mu.Lock()
	ds := a.saved.Desired
	a.mu.Unlock()
	if ds == nil {
		return
	}
	a.log.Info("server unreachable at start: restoring the last desired state from the cache")
	a.converge(ctx, ds, true)
}

// converge brings the host onto ds. Offline, it only loads programs that do
// not run, from the cache, and unloads nothing.
func (a *Agent) converge(ctx context.Context, ds *api.DesiredState, offline bool) {
	a.m.converges.Inc()
	want := map[string]bool{}
	for i := range ds.Programs {
		d := ds.Programs[i]
		want[d.Program] = true
		if ctx.Err() != nil {
			return
		}
		a.convergeOne(ctx, &d, offline)
	}
	if !offline {
		a.mu.Lock()
		var gone []*program
		for name, p := range a.programs {
			if !want[name] && p.managed {
				gone = append(gone, p)
			}
		}
		a.mu.Unlock()
		for _, p := range gone {
			a.unload(p)
		}
		a.mu.Lock()
		a.saved.Desired = ds
		a.mu.Unlock()
	}
	a.syncExports()
	a.save()
	a.updateGauges()
	a.kickReport()
}

// unload removes a program no longer desired.
func (a *Agent) unload(p *program) {
	err := a.loader.Unload(p.name, a.baseOptions())
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil && !errors.Is(err, loader.ErrNotLoaded) {
		a.m.ops.WithLabelValues("unload", "error").Inc()
		a.log.Error("unload a program no longer desired", "program", p.name, "err", err)
		p.err = "unload: " + err.Error()
		return
	}
	a.m.ops.WithLabelValues("unload", "ok").Inc()
	a.export.Remove(p.name)
	if p.loaded != nil {
		a.log.Info("unloaded a program no longer desired", "program", p.name, "revision", short(p.revision))
	}
	delete(a.programs, p.name)
}

// convergeOne brings one program onto its desired revision and options.
func (a *Agent) convergeOne(ctx context.Context, d *api.DesiredProgram, offline bool) {
	a.mu.Lock()
	p := a.program(d.Program)
	p.managed, p.desired, p.retry = true, d, false
	running := p.loaded != nil
	key := optionsKey(d.Options)
	target := d.Revision + "|" + key
	switch {
	case offline && running && !p.broken:
		a.mu.Unlock()
		return
	case d.Revision == "":
		// The server has nothing to run yet: keep what runs.
		a.setState(p, api.HostProgramPending, d.Pending)
		a.mu.Unlock()
		return
	case running && !p.broken && p.revision == d.Revision && p.optsKey == key:
		a.setState(p, api.HostProgramLoaded, "")
		a.mu.Unlock()
		return
	case p.refused == target:
		a.mu.Unlock()
		return // gave up on it until the desired state changes
	}
	old := p.loaded
	a.mu.Unlock()

	log := a.log.With("program", d.Program, "revision", short(d.Revision))
	art, fetched, err := a.fetch(ctx, d, offline)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.m.ops.WithLabelValues("fetch", "error").Inc()
		if client.IsTransient(err) {
			p.retry = true
			log.Warn("fetch the desired revision; will retry", "err", err)
			a.setState(p, api.HostProgramPending, "fetch: "+err.Error())
			return
		}
		p.refused = target
		log.Error("artifact refused", "err", err)
		a.fail(p, "artifact refused: "+err.Error())
		return
	}
	if fetched.FromCache {
		log.Info("server unreachable: using the last good artifact from the cache")
	}
	// The report says this kernel lacks a feature a program needs: the
	// kernel would refuse it. Report that rather than try.
	if err := client.CheckSupported(fetched.Manifest, d.Options.Programs); err != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.m.ops.WithLabelValues("fetch", "unsupported").Inc()
		p.refused = target
		log.Error("artifact unsupported on this kernel", "err", err)
		a.fail(p, err.Error())
		return
	}
	opt := a.loaderOptions(d.Options, d.Revision)
	var l *loader.Loaded
	op := "load"
	if old != nil {
		op = "swap"
		l, err = a.loader.Swap(ctx, old, art, opt)
	} else {
		// Remnants of a failed earlier load would make Load fail: the
		// agent owns this name.
		if uerr := a.loader.Unload(d.Program, a.baseOptions()); uerr != nil && !errors.Is(uerr, loader.ErrNotLoaded) {
			log.Warn("clear remnants before load", "err", uerr)
		}
		l, err = a.loader.Load(ctx, art, opt)
	}
	if err != nil && l != nil {
		// The new revision runs; something of the old one is left.
		log.Warn("swapped, but the old revision was not removed completely", "err", err)
		err = nil
	}
	if err != nil {
		a.m.ops.WithLabelValues(op, "error").Inc()
		if old != nil {
			log.Error("new revision failed; keeping the last good one", "op", op, "running", short(p.revision), "err", err)
			a.restore(ctx, d.Program, old)
		} else {
			log.Error("load failed", "err", err)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		p.refused = target
		a.fail(p, op+": "+err.Error())
		return
	}
	a.m.ops.WithLabelValues(op, "ok").Inc()
	log.Info("desired revision running", "op", op, "mode", l.Mode, "previous", short(p.revision))
	if err := client.RecordLoaded(a.cfg.CacheDir, fetched.Manifest); err != nil {
		log.Warn("record the loaded revision", "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p.loaded, p.revision, p.kernel, p.options, p.optsKey, p.broken, p.refused = l, d.Revision, d.Kernel, d.Options, key, false, ""
	p.state = "" // force Since to move
	a.setState(p, api.HostProgramLoaded, "")
	a.saved.Managed[d.Program] = savedProgram{Revision: d.Revision, Kernel: d.Kernel, Options: d.Options}
}

// fail records a failed attempt: rolled_back when an older revision keeps
// running, else failed. a.mu must be held.
func (a *Agent) fail(p *program, msg string) {
	if p.loaded != nil {
		a.m.rollbacks.Inc()
		a.setState(p, api.HostProgramRolledBack, msg)
	} else {
		a.setState(p, api.HostProgramFailed, msg)
	}
}

// restore makes sure the last good set of name still runs after a failed
// swap: re-adopted as is when intact, else loaded again from the cache.
func (a *Agent) restore(ctx context.Context, name string, old *loader.Loaded) {
	a.mu.Lock()
	p := a.programs[name]
	rev, kid, opts := p.revision, p.kernel, p.options
	a.mu.Unlock()
	l, err := a.loader.Adopt(name, a.baseOptions())
	if err == nil && l.Revision == rev && healthy(l) {
		// Intact: keep holding old, whose attachments that could not be
		// pinned live only as long as it does.
		return
	}
	a.log.Warn("the failed swap disturbed the last good revision; loading it again from the cache", "program", name,
		"revision", short(rev), "adopt_err", err)
	// The revision that ran: explicitly what is asked for, even if older
	// than the newest loaded.
	art, _, ferr := a.fetch(ctx, &api.DesiredProgram{Program: name, Revision: rev, Kernel: kid, Pinned: true}, true)
	if ferr == nil {
		if uerr := a.loader.Unload(name, a.baseOptions()); uerr != nil && !errors.Is(uerr, loader.ErrNotLoaded) {
			a.log.Warn("clear remnants before restore", "program", name, "err", uerr)
		}
		l, err = a.loader.Load(ctx, art, a.loaderOptions(opts, rev))
	} else {
		err = ferr
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.m.ops.WithLabelValues("restore", "error").Inc()
		a.log.Error("restore the last good revision", "program", name, "revision", short(rev), "err", err)
		p.loaded = nil
		return
	}
	a.m.ops.WithLabelValues("restore", "ok").Inc()
	p.loaded = l
}

func healthy(l *loader.Loaded) bool {
	for _, p := range l.Programs {
		if p.Error != "" {
			return false
		}
	}
	return true
}

// fetch fetches and verifies the artifact of d (offline: from the cache
// only) with client.FetchArtifact, whose CheckArtifact holds it to d: the
// program, the revision (not older than the newest loaded here unless the
// assignment pins it), the kernel and this host's arch and release.
func (a *Agent) fetch(ctx context.Context, d *api.DesiredProgram, offline bool) (*loader.Artifact, *client.Fetched, error) {
	pub, err := a.publicKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	kid := d.Kernel
	if kid == "" {
		kid = a.host.ID.String()
	}
	f, err := a.fetcher.FetchArtifact(ctx, d.Program, kid, d.Revision, client.FetchOptions{PublicKey: pub,
		CacheDir: a.cfg.CacheDir, Offline: offline, HostKernel: a.host.ID.String(), RevisionIsLatest: !d.Pinned})
	if err != nil {
		return nil, nil, err
	}
	m := f.Manifest
	return &loader.Artifact{Name: d.Program, Revision: m.Revision, Object: f.Object, MinBTF: f.MinBTF,
		Relocated: f.Relocated, KernelBTF: m.KernelBTF}, f, nil
}

// setState records a program's state, moving Since when it changes.
// a.mu must be held.
func (a *Agent) setState(p *program, state, msg string) {
	const maxError = 4096
	if len(msg) > maxError {
		msg = msg[:maxError] + "..."
	}
	if p.state != state {
		p.since = time.Now().UTC()
	}
	p.state, p.err = state, msg
}

func (a *Agent) retryPending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.programs {
		if p.retry {
			return true
		}
	}
	return false
}

// Report returns the per-program state the agent reports.
func (a *Agent) Report() api.HostReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := api.HostReport{Programs: []api.HostProgram{}}
	for _, p := range a.programs {
		if p.state == "" {
			continue
		}
		hp := api.HostProgram{Program: p.name, State: p.state, Error: p.err, Since: p.since, Exports: p.exports}
		if p.loaded != nil {
			hp.Revision = p.revision
		}
		if p.desired != nil && p.desired.Revision != "" && p.desired.Revision != hp.Revision {
			hp.Desired = p.desired.Revision
		}
		rep.Programs = append(rep.Programs, hp)
	}
	slices.SortFunc(rep.Programs, func(x, y api.HostProgram) int { return strings.Compare(x.Program, y.Program) })
	return rep
}

func (a *Agent) kickReport() {
	select {
	case a.reportNow <- struct{}{}:
	default:
	}
}

// reportLoop reports after every change and every heartbeat, retrying with
// backoff while the server is unreachable.
func (a *Agent) reportLoop(ctx context.Context) {
	tick := time.NewTicker(a.cfg.Poll.Heartbeat)
	defer tick.Stop()
	bo := backoff{min: a.cfg.Poll.BackoffMin, max: a.cfg.Poll.BackoffMax}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportNow:
		case <-tick.C:
		case <-retry:
		}
		retry = nil
		if !a.isRegistered() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.c.Report(rctx, a.cfg.Name, a.Report())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.m.reportErrors.Inc()
			if client.IsNotFound(err) {
				a.setRegistered(false)
			}
			d := bo.next()
			a.log.Debug("report state", "err", err, "retry_in", d)
			retry = time.After(d)
			continue
		}
		bo.reset()
	}
}

// save writes the managed programs and the last desired state.
func (a *Agent) save() {
	a.mu.Lock()
	for name := range a.saved.Managed {
		if p := a.programs[name]; p == nil || !p.managed || p.loaded == nil {
			delete(a.saved.Managed, name)
		}
	}
	b, err := json.MarshalIndent(a.saved, "", "  ")
	a.mu.Unlock()
	if err == nil {
		err = fsutil.WriteFileAtomic(filepath.Join(a.cfg.StateDir, "agent.json"), append(b, '\n'), 0o600)
	}
	if err != nil {
		a.log.Warn("save agent state", "err", err)
	}
}

func (a *Agent) loadSaved() savedState {
	s := savedState{Managed: map[string]savedProgram{}}
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, "agent.json"))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("read agent state", "err", err)
		}
		return s
	}
	if err := json.Unmarshal(b, &s); err != nil {
		a.log.Warn("agent state is corrupt; starting afresh", "err", err)
		return savedState{Managed: map[string]savedProgram{}}
	}
	if s.Managed == nil {
		s.Managed = map[string]savedProgram{}
	}
	return s
}

func optionsKey(o api.LoadOptions) string {
	b, _ := json.Marshal(o) // maps marshal sorted: deterministic
	return string(b)
}

// hostID returns /etc/machine-id, else an id generated once and kept in
// stateDir/host-id.
func hostID(stateDir string) (string, error) {
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	p := filepath.Join(stateDir, "host-id")
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := fsutil.WriteFileAtomic(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("host id: %w", err)
	}
	return id, nil
}

// backoff is exponential backoff with jitter: each delay is drawn from
// [d/2, d) as d doubles from min up to max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + time.Duration(mrand.Int64N(int64(half)+1))
}

func (b *backoff) reset() { b.cur = 0 }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// metrics are the agent's Prometheus metrics.
type metrics struct {
	converges    prometheus.Counter
	ops          *prometheus.CounterVec
	rollbacks    prometheus.Counter
	adopted      prometheus.Counter
	pollErrors   prometheus.Counter
	reportErrors prometheus.Counter
	programs     *prometheus.GaugeVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		converges: prometheus.NewCounter(prometheus.CounterOpts{Name: "bpfarm_agent_converges_total",
			Help: "Convergences onto a new desired state."}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bpfarm_agent_operations_total",
			Help: "Fetches, loads, swaps, restores and unloads, by result."}, []string{"op", "result"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "bpfarm_agent_rollbacks_total",
			Help: "New revisions refused while the last good one kept running."}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{Name: "bpfarm_agent_adopted_total",
			Help: "Program sets adopted at start."}),
		pollErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "bpfarm_agent_desired_errors_total",
			Help: "Failed desired-state requests (server unreachable, ...)."}),
		reportErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "bpfarm_agent_report_errors_total",
			Help: "Failed state reports."}),
		programs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bpfarm_agent_programs",
			Help: "Programs by reported state."}, []string{"state"}),
	}
	reg.MustRegister(m.converges, m.ops, m.rollbacks, m.adopted, m.pollErrors, m.reportErrors, m.programs)
	return m
}

func (a *Agent) updateGauges() {
	a.mu.Lock()
	defer a.mu.Unlock()
	counts := map[string]int{api.HostProgramLoaded: 0, api.HostProgramFailed: 0, api.HostProgramRolledBack: 0,
		api.HostProgramPending: 0}
	for _, p := range a.programs {
		if p.state != "" {
			counts[p.state]++
		}
	}
	for s, n := range counts {
		a.m.programs.WithLabelValues(s).Set(float64(n))
	}
}

// syncExports points the exporter at the running set of every program
// whose set or exports changed, and keeps each export's status for the
// report (a map that cannot be exported is reported, not dropped).
func (a *Agent) syncExports() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.programs {
		var want []api.Export
		if p.desired != nil && p.loaded != nil {
			want = p.desired.Exports
		}
		key, _ := json.Marshal(want)
		if p.exportedSet == p.loaded && p.exportsKey == string(key) {
			continue
		}
		p.exportedSet, p.exportsKey, p.exports = p.loaded, string(key), nil
		if len(want) == 0 {
			a.export.Remove(p.name)
			continue
		}
		p.exports = a.export.Update(p.loaded, want)
		for _, st := range p.exports {
			if st.Error != "" {
				a.log.Warn("cannot export a map; reported to the server", "program", p.name, "map", st.Map, "err", st.Error)
			} else {
				a.log.Info("exporting a map", "program", p.name, "map", st.Map, "kind", st.Kind, "metrics", st.Metrics,
					"labels", st.Labels)
			}
		}
	}
}

// MetricsAddr returns the address /metrics is served at ("" until Run
// listens on Config.MetricsAddr): with port 0 in the config, the port the
// kernel chose.
func (a *Agent) MetricsAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.metricsAddr
}

// Exporter returns the agent's map exporter (what /metrics serves besides
// the agent's own metrics).
func (a *Agent) Exporter() *export.Exporter { return a.export }

// ServeMetrics serves the agent's own metrics, then the exported maps'
// series, in the Prometheus text format. The exported maps are streamed
// from the pinned maps as they are read (see package export), not
// gathered into memory first.
func (a *Agent) ServeMetrics(w http.ResponseWriter, r *http.Request) {
	mfs, err := a.reg.Gather()
	if err != nil {
		a.log.Warn("gather the agent's metrics", "err", err)
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return
		}
	}
	if err := a.export.WriteText(w); err != nil {
		a.log.Debug("write exported metrics", "err", err)
	}
}

// serveMetrics serves /metrics at MetricsAddr until the returned function
// is called.
func (a *Agent) serveMetrics() (func(), error) {
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", a.ServeMetrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	a.mu.Lock()
	a.metricsAddr = ln.Addr().String()
	a.mu.Unlock()
	a.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}
