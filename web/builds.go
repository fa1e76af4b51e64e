package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/server/blob"
)

// maxLogShown bounds the build log shown inline; the whole log is a
// download away.
const maxLogShown = 1 << 20

type buildData struct {
	Build        api.Build
	Log          string
	LogTruncated bool
	Counts       Tally
	Kernels      int // kernels of the build's arch (relocation targets)
	Final        bool
	Done         bool
	Errors       int
	Warnings     int
}

func (u *UI) pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("%q is not an id.", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (u *UI) buildPage(w http.ResponseWriter, r *http.Request) {
	id, ok := u.pathID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	b, err := u.cfg.DB.Build(ctx, id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := buildData{Build: b}
	for _, dg := range b.Diagnostics {
		switch dg.Severity {
		case bpfsrc.SeverityError, bpfsrc.SeverityFatal:
			d.Errors++
		case bpfsrc.SeverityWarning:
			d.Warnings++
		}
	}
	if d.Counts, err = u.cfg.DB.BuildTally(ctx, id); err != nil {
		u.fail(w, r, err)
		return
	}
	if b.Kernel != "" {
		d.Kernels = 1
	} else if per, err := u.cfg.DB.KernelsPerArch(ctx); err == nil {
		d.Kernels = per[b.Arch]
	}
	if b.Log != nil {
		if dg, err := blob.ParseDigest(b.Log.Digest); err == nil {
			if rc, err := u.cfg.Blobs.Get(ctx, dg); err == nil {
				data, _ := io.ReadAll(io.LimitReader(rc, maxLogShown+1))
				rc.Close()
				if len(data) > maxLogShown {
					data, d.LogTruncated = data[:maxLogShown], true
				}
				d.Log = string(data)
			} else {
				u.log.Warn("ui: read build log", "build", id, "err", err)
			}
		}
	}
	d.Done = b.Done()
	d.Final = d.Done && d.Counts.Pending == 0 && !queueing(b, d.Counts, d.Kernels)
	pg := page{Title: fmt.Sprintf("Build %d · %s", b.ID, b.Program), Active: "programs", Data: d}
	if !d.Final && u.cfg.Builds != nil {
		pg.Live, pg.Events = "build", fmt.Sprintf("/builds/%d/events", b.ID)
	}
	u.render(w, r, http.StatusOK, "build.html", pg)
}

// queueing reports whether a build succeeded moments ago and its
// relocations are not queued yet.
func queueing(b api.Build, c Tally, kernels int) bool {
	return b.State == api.StateSucceeded && c.Total() == 0 && kernels > 0 && b.FinishedAt != nil &&
		time.Since(*b.FinishedAt) < queueingGrace
}

// buildEvent is what the build page's live log receives.
type buildEvent struct {
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	DurationMS  int64      `json:"duration_ms,omitempty"`
	Error       string     `json:"error,omitempty"`
	OK          int        `json:"ok"`
	Poisoned    int        `json:"poisoned"`
	Unsupported int        `json:"unsupported"`
	Failed      int        `json:"failed"`
	Errors      int        `json:"errors"`
	Pending     int        `json:"pending"`
	Final       bool       `json:"final"`
}

// buildEvents streams a build's state and its relocations' progress
// (Server-Sent Events) until both are finished.
func (u *UI) buildEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := u.pathID(w, r)
	if !ok {
		return
	}
	if _, err := u.cfg.DB.Build(r.Context(), id); err != nil {
		u.fail(w, r, err)
		return
	}
	u.stream(w, r, func() (string, bool, error) {
		b, err := u.cfg.DB.Build(r.Context(), id)
		if err != nil {
			return "", false, err
		}
		c, err := u.cfg.DB.BuildTally(r.Context(), id)
		if err != nil {
			return "", false, err
		}
		kernels := 1
		if b.Kernel == "" {
			per, err := u.cfg.DB.KernelsPerArch(r.Context())
			if err != nil {
				return "", false, err
			}
			kernels = per[b.Arch]
		}
		ev := buildEvent{State: b.State, Attempts: b.Attempts, StartedAt: b.StartedAt, DurationMS: b.DurationMS,
			Error: oneLine(b.Error), OK: c.OK, Poisoned: c.Poisoned, Unsupported: c.Unsupported, Failed: c.Failed, Errors: c.Error, Pending: c.Pending,
			Final: b.Done() && c.Pending == 0 && !queueing(b, c, kernels)}
		data, err := json.Marshal(ev)
		return string(data), ev.Final, err
	})
}

// stream answers Server-Sent Events: an "update" event whenever poll's
// data changes (polled again at each change the build service announces),
// then "final" when poll says so. It ends after two minutes; browsers
// reconnect on their own.
func (u *UI) stream(w http.ResponseWriter, r *http.Request, poll func() (data string, final bool, err error)) {
	if u.cfg.Builds == nil {
		u.errorPage(w, r, http.StatusNotFound, "This server has no live updates.")
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	ctx := r.Context()
	end := time.NewTimer(2 * time.Minute)
	defer end.Stop()
	ping := time.NewTicker(20 * time.Second)
	defer ping.Stop()
	last := ""
	for {
		changed := u.cfg.Builds.Changed() // subscribe before reading
		data, final, err := poll()
		if err != nil {
			if ctx.Err() == nil {
				u.log.Warn("ui: event stream", "path", r.URL.Path, "err", err)
			}
			return
		}
		if data != last {
			fmt.Fprintf(w, "event: update\ndata: %s\n\n", data)
			last = data
		}
		if final {
			fmt.Fprint(w, "event: final\ndata: {}\n\n")
			rc.Flush()
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-end.C:
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case <-changed:
			// Coalesce bursts: a fan-out finishes many relocations at once.
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

func (u *UI) buildLog(w http.ResponseWriter, r *http.Request) {
	id, ok := u.pathID(w, r)
	if !ok {
		return
	}
	b, err := u.cfg.DB.Build(r.Context(), id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if b.Log == nil {
		u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Build %d has no log yet (it is %s).", id, b.State))
		return
	}
	u.serveBlob(w, r, b.Log.Digest, "text/plain; charset=utf-8", fmt.Sprintf("%s-build-%d.log", b.Program, b.ID), false)
}

func (u *UI) buildObject(w http.ResponseWriter, r *http.Request) {
	id, ok := u.pathID(w, r)
	if !ok {
		return
	}
	b, err := u.cfg.DB.Build(r.Context(), id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if b.Object == nil {
		u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Build %d has no object (it is %s).", id, b.State))
		return
	}
	u.serveBlob(w, r, b.Object.Digest, "application/x-elf", b.Program+".bpf.o", true)
}
