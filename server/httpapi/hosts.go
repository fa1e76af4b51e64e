package httpapi

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/store"
)

const (
	// maxDesiredWait bounds a desired-state long poll.
	maxDesiredWait = 2 * time.Minute
	// desiredRecheck is how often a waiting long poll recomputes the
	// desired state even without a change notification (a safety net for
	// changes no notifier covers, such as a kernel deleted).
	desiredRecheck = 15 * time.Second
	// maxHostBody bounds registration, report and assignment bodies.
	maxHostBody = 1 << 20
)

// hostsState is the API's part of hosts and assignments: long polls'
// shutdown, and metrics. Long polls wait on store.TopicHosts (and
// TopicBuilds), which changes made through any replica announce.
type hostsState struct {
	// stopping is closed when the server shuts down: long polls answer.
	stopping chan struct{}
	stopOnce sync.Once
	// snapMu guards snap, the desired-state snapshot that long polls
	// share until the next change (see desiredSnapshot).
	snapMu       sync.Mutex
	snap         *desiredSnapshot
	polls        *prometheus.CounterVec
	waiting      prometheus.Gauge
	reports      *prometheus.CounterVec
	registration *prometheus.CounterVec
}

// desiredSnapshotAge bounds how long long polls share one snapshot when no
// change is announced, so that the periodic re-check (desiredRecheck)
// reads fresh rows.
const desiredSnapshotAge = desiredRecheck / 3

// desiredSnapshot is one reading of the desired state of every host,
// shared by the long polls of this process until a change is announced:
// one assignment change wakes every waiting agent at once, and the view
// answers all of them from a handful of queries instead of a handful per
// agent.
type desiredSnapshot struct {
	view *store.DesiredView
	// hosts and builds were subscribed before the view read anything: a
	// change after its reads closes them.
	hosts, builds <-chan struct{}
	taken         time.Time
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// desiredSnapshot returns the current snapshot, or takes a new one when a
// change was announced since, or the current one is older than
// desiredSnapshotAge.
func (s *Server) desiredSnapshot() *desiredSnapshot {
	h := s.hosts
	h.snapMu.Lock()
	defer h.snapMu.Unlock()
	if c := h.snap; c != nil && !closed(c.hosts) && !closed(c.builds) && time.Since(c.taken) < desiredSnapshotAge {
		return c
	}
	// Subscribe before the view reads, so no change slips in between.
	c := &desiredSnapshot{hosts: s.cfg.DB.Changed(store.TopicHosts), taken: time.Now()}
	if s.cfg.Builds != nil {
		c.builds = s.cfg.Builds.Changed()
	}
	c.view = s.cfg.DB.DesiredView()
	h.snap = c
	return c
}

// hostsChanged announces a change of hosts, assignments or trust to every
// replica's desired-state long polls.
func (s *Server) hostsChanged() { s.cfg.DB.Notify(context.Background(), store.TopicHosts) }

func newHostsState(reg *prometheus.Registry) *hostsState {
	h := &hostsState{
		stopping: make(chan struct{}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_desired_polls_total",
			Help: "Desired-state requests by outcome: immediate (no version given or it differed), changed (a long poll woken by a change), unchanged (the wait passed).",
		}, []string{"outcome"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bpfarm_desired_polls_waiting",
			Help: "Desired-state long polls waiting for a change.",
		}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_host_program_reports_total",
			Help: "Per-program states reported by agents, by state.",
		}, []string{"state"}),
		registration: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpfarm_host_registrations_total",
			Help: "Host registrations by kind: new, changed (kernel or labels), unchanged.",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(h.polls, h.waiting, h.reports, h.registration)
	}
	return h
}

var (
	hostNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$`)
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_./-]{0,126}[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9_./:@+-]{0,256}$`)
)

// validHostName checks a host name: a DNS-like name.
func validHostName(name string) error {
	if !hostNameRE.MatchString(name) {
		return fmt.Errorf("host name %q: use 1-253 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// validLabels checks labels or a selector: keys of letters, digits and
// _./- (1-128), values of letters, digits and _./:@+- (0-256).
func validLabels(what string, m map[string]string) error {
	for k, v := range m {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("%s key %q: use 1-128 letters, digits, '_', '.', '/' or '-', starting and ending with a letter or digit", what, k)
		}
		if !labelValueRE.MatchString(v) {
			return fmt.Errorf("%s %s=%q: values use up to 256 letters, digits, '_', '.', '/', ':', '@', '+' or '-'", what, k, v)
		}
	}
	return nil
}

var hostProgramStates = []string{api.HostProgramLoaded, api.HostProgramFailed, api.HostProgramRolledBack, api.HostProgramPending}

func (s *Server) registerHost(w http.ResponseWriter, r *http.Request) {
	var reg api.HostRegistration
	if err := jsonDecoder(http.MaxBytesReader(w, r.Body, maxHostBody)).Decode(&reg); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("host registration: %w", err))
		return
	}
	if err := validHostName(reg.Name); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if !s.actAsHost(w, r, reg.Name) {
		return
	}
	kid, err := kernel.ParseID(reg.Kernel)
	if err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("host %s: %w", reg.Name, err))
		return
	}
	reg.Kernel = kid.String() // canonical: aarch64 is arm64
	if err := validLabels("label", reg.Labels); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("host %s: %w", reg.Name, err))
		return
	}
	if len(reg.HostID) > 256 || len(reg.Hostname) > 256 || len(reg.AgentVersion) > 256 || len(reg.Build) > 1024 {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("host %s: host_id, hostname, agent_version or build too long", reg.Name))
		return
	}
	p := auth.FromContext(r.Context())
	by := p.Name
	// Labels enrolled by an admin are the host's labels, whatever the
	// agent says (they decide what the host is assigned).
	enrolled, err := s.cfg.DB.EnrolledLabels(r.Context(), p.TokenID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(enrolled) > 0 {
		if len(reg.Labels) > 0 && !store.Matches(reg.Labels, enrolled) {
			s.log.Warn("host registers other labels than it was enrolled with; the enrolled ones hold", "host", reg.Name,
				"registered", reg.Labels, "enrolled", enrolled)
		}
		reg.Labels = enrolled
	}
	res, err := s.cfg.DB.RegisterHost(r.Context(), reg, by)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case res.Created:
		s.hosts.registration.WithLabelValues("new").Inc()
		s.log.Info("host registered", "host", reg.Name, "kernel", reg.Kernel, "labels", reg.Labels, "by", by)
	case res.Changed:
		s.hosts.registration.WithLabelValues("changed").Inc()
		s.log.Info("host re-registered with another kernel or labels", "host", reg.Name, "kernel", reg.Kernel,
			"labels", reg.Labels, "by", by)
	default:
		s.hosts.registration.WithLabelValues("unchanged").Inc()
	}
	if res.PreviousHostID != "" {
		s.log.Warn("host name registered by another machine", "host", reg.Name, "host_id", reg.HostID,
			"previous_host_id", res.PreviousHostID, "by", by)
	}
	if res.Changed {
		s.hostsChanged()
	}
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
	}
	s.json(w, code, res.Host)
}

func (s *Server) reportHost(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if !s.actAsHost(w, r, name) {
		return
	}
	var rep api.HostReport
	if err := jsonDecoder(http.MaxBytesReader(w, r.Body, maxHostBody)).Decode(&rep); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("host report: %w", err))
		return
	}
	for _, p := range rep.Programs {
		if err := build.ValidProgramName(p.Program); err != nil {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("host report: %w", err))
			return
		}
		if err := validExportStatuses(p.Exports); err != nil {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("host report: program %s: %w", p.Program, err))
			return
		}
		if !slices.Contains(hostProgramStates, p.State) {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("host report: program %s: state %q: want one of %s",
				p.Program, p.State, strings.Join(hostProgramStates, ", ")))
			return
		}
	}
	if err := s.cfg.DB.ReportHost(r.Context(), name, rep.Programs); err != nil {
		s.fail(w, r, err)
		return
	}
	for _, p := range rep.Programs {
		s.hosts.reports.WithLabelValues(p.State).Inc()
		if p.State == api.HostProgramFailed || p.State == api.HostProgramRolledBack {
			s.log.Warn("host reports a program failure", "host", name, "program", p.Program, "state", p.State,
				"revision", p.Revision, "desired", p.Desired, "err", p.Error)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	hs, err := s.cfg.DB.Hosts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if hs == nil {
		hs = []api.Host{}
	}
	s.json(w, http.StatusOK, hs)
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.cfg.DB.Host(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.json(w, http.StatusOK, h)
}

// desiredState answers what a host should run. With version=N (or
// If-None-Match: "N") and wait=DURATION it long-polls: it answers as soon
// as the desired state's version differs from N, or with the unchanged
// state when the wait passes. Waiters wake on assignment and registration
// changes and on every build or relocation state change, and recompute.
func (s *Server) desiredState(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	q := r.URL.Query()
	var have uint64
	v := q.Get("version")
	if v == "" {
		v = strings.Trim(r.Header.Get("If-None-Match"), `"`)
	}
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("version %q: want the version number of a previous answer", v))
			return
		}
		have = n
	}
	var wait time.Duration
	if ws := q.Get("wait"); ws != "" {
		d, err := time.ParseDuration(ws)
		if err != nil || d < 0 {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("wait %q: want a duration such as 30s", ws))
			return
		}
		wait = min(d, maxDesiredWait)
	}
	ctx := r.Context()
	// A host polls its own desired state; an admin may look at any host's
	// (without marking it seen).
	if p := auth.FromContext(ctx); !auth.Allows(p.Role, api.RoleAdmin) || p.Anonymous {
		if !s.actAsHost(w, r, name) {
			return
		}
		if err := s.cfg.DB.TouchHost(ctx, name); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	outcome := "immediate"
	for waited := false; ; waited = true {
		snap := s.desiredSnapshot()
		ds, err := snap.view.DesiredState(ctx, name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if have == 0 || ds.Version != have || wait == 0 {
			if waited {
				outcome = "changed"
			}
			s.answerDesired(w, ds, outcome)
			return
		}
		s.hosts.waiting.Inc()
		select {
		case <-ctx.Done():
			s.hosts.waiting.Dec()
			return
		case <-deadline.C:
			s.hosts.waiting.Dec()
			s.answerDesired(w, ds, "unchanged")
			return
		case <-s.hosts.stopping:
			s.hosts.waiting.Dec()
			s.answerDesired(w, ds, "unchanged")
			return
		case <-snap.hosts:
		case <-snap.builds:
		case <-time.After(desiredRecheck):
		}
		s.hosts.waiting.Dec()
	}
}

// StopLongPolls answers every waiting desired-state long poll at once
// (with the unchanged state): the server calls it when it shuts down
// (http.Server.RegisterOnShutdown), so that shutdown need not wait for
// them.
func (s *Server) StopLongPolls() {
	s.hosts.stopOnce.Do(func() { close(s.hosts.stopping) })
}

func (s *Server) answerDesired(w http.ResponseWriter, ds api.DesiredState, outcome string) {
	s.hosts.polls.WithLabelValues(outcome).Inc()
	w.Header().Set("ETag", `"`+strconv.FormatUint(ds.Version, 10)+`"`)
	w.Header().Set("Cache-Control", "no-store")
	s.json(w, http.StatusOK, ds)
}

func (s *Server) listAssignments(w http.ResponseWriter, r *http.Request) {
	as, err := s.cfg.DB.Assignments(r.Context(), r.URL.Query().Get("program"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if as == nil {
		as = []api.Assignment{}
	}
	s.json(w, http.StatusOK, as)
}

func (s *Server) createAssignment(w http.ResponseWriter, r *http.Request) {
	var req api.AssignmentRequest
	if err := jsonDecoder(http.MaxBytesReader(w, r.Body, maxHostBody)).Decode(&req); err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("assignment: %w", err))
		return
	}
	if err := build.ValidProgramName(req.Program); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if err := validLabels("selector", req.Selector); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	for m, n := range req.Options.MaxEntries {
		if n == 0 {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("max_entries of %s: want a positive number", m))
			return
		}
	}
	if err := api.ValidateExports(req.Exports); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if err := s.checkExports(r.Context(), req); err != nil {
		s.fail(w, r, err)
		return
	}
	by := auth.FromContext(r.Context()).Name
	a, err := s.cfg.DB.AddAssignment(r.Context(), req, by)
	if err != nil {
		s.fail(w, r, err) // a revision prefix too short or ambiguous is store.ErrInvalid: 400
		return
	}
	s.log.Info("program assigned", "assignment", a.ID, "program", a.Program, "selector", a.Selector,
		"revision", a.Revision, "exports", len(a.Exports), "by", by)
	s.hostsChanged()
	s.json(w, http.StatusCreated, a)
}

func (s *Server) deleteAssignment(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("assignment id %q: not a positive integer", chi.URLParam(r, "id")))
		return
	}
	if err := s.cfg.DB.DeleteAssignment(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("assignment removed", "assignment", id, "by", auth.FromContext(r.Context()).Name)
	s.hostsChanged()
	w.WriteHeader(http.StatusNoContent)
}

// requireKernelImport guards kernel imports: they need an admin token,
// except that with AgentBTFUpload a host token may upload its own
// registered host's kernel BTF — the multipart form client.ImportKernel
// sends, without replace, for the host's registered kernel id. Such a
// kernel is stored unverified, with the host as its source (see
// store.Kernel.ServedTo). Reader tokens may not upload.
func (s *Server) requireKernelImport(next http.Handler) http.Handler {
	admin := s.require(api.RoleAdmin)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := auth.FromContext(r.Context())
		if p.Role != api.RoleHost || p.Anonymous {
			admin.ServeHTTP(w, r)
			return
		}
		if !s.cfg.AgentBTFUpload {
			s.error(w, r, http.StatusForbidden, fmt.Errorf("token %q is host %s's token: this server does not take "+
				"hosts' BTF (run it with --agent-btf-upload); kernel imports need admin", p.Name, p.Host))
			return
		}
		q := r.URL.Query()
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "multipart/form-data" || q.Get("replace") != "" && q.Get("replace") != "false" {
			s.error(w, r, http.StatusForbidden, fmt.Errorf("token %q is host %s's token: hosts may only upload their "+
				"kernel's BTF (multipart, without replace); anything else needs admin", p.Name, p.Host))
			return
		}
		kid := q.Get("id")
		h, err := s.cfg.DB.Host(r.Context(), p.Host)
		if errors.Is(err, store.ErrNotFound) {
			s.error(w, r, http.StatusForbidden, fmt.Errorf("host %s is not registered: register before uploading its BTF", p.Host))
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if kid == "" || kid != h.Kernel {
			s.error(w, r, http.StatusForbidden, fmt.Errorf("host %s runs kernel %s: it may only upload that kernel's BTF, "+
				"not id=%q", p.Host, h.Kernel, kid))
			return
		}
		s.log.Info("host uploads its kernel's BTF (stored unverified)", "kernel", kid, "host", p.Host, "by", p.Name)
		next.ServeHTTP(w, r)
	})
}
