package web

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/store"
)

// staleAfter is how long a host may stay silent before the page flags it.
const staleAfter = 10 * time.Minute

type assigned struct {
	Program    string
	Revision   string // pinned digest, "" for the latest
	Assignment int64
	Exports    []api.Export
}

type hostRow struct {
	api.Host
	Labels   []label
	Assigned []assigned
	// ExportErrors counts the maps the host cannot export.
	ExportErrors int
	// State sums up the host's programs: loaded, failed, rolled_back,
	// pending, or idle (nothing reported).
	State string
	Stale bool
}

type label struct{ Key, Value string }

// hostsPerPage bounds the host list of one page.
const hostsPerPage = 100

type hostsData struct {
	Hosts       []hostRow // this page
	Total       int
	Pages       pager
	Assignments int
	States      map[string]int
}

func (u *UI) hostsPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	hs, err := u.cfg.DB.Hosts(ctx)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	as, err := u.cfg.DB.Assignments(ctx, "")
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := hostsData{Assignments: len(as), States: map[string]int{}, Total: len(hs)}
	d.Pages = paginate(r, len(hs), hostsPerPage)
	now := time.Now()
	for i, h := range hs {
		if i < d.Pages.From || i >= d.Pages.To {
			d.States[hostState(h.Programs)]++
			continue
		}
		row := hostRow{Host: h, State: hostState(h.Programs), Stale: now.Sub(h.LastSeen) > staleAfter}
		for _, p := range h.Programs {
			for _, e := range p.Exports {
				if e.Error != "" {
					row.ExportErrors++
				}
			}
		}
		for k, v := range h.Labels {
			row.Labels = append(row.Labels, label{k, v})
		}
		slices.SortFunc(row.Labels, func(a, b label) int { return strings.Compare(a.Key, b.Key) })
		// The assignments the host follows, as its desired state does.
		for p, a := range store.Effective(as, h.Labels) {
			row.Assigned = append(row.Assigned, assigned{Program: p, Revision: a.Revision, Assignment: a.ID, Exports: a.Exports})
		}
		slices.SortFunc(row.Assigned, func(a, b assigned) int { return strings.Compare(a.Program, b.Program) })
		d.States[row.State]++
		d.Hosts = append(d.Hosts, row)
	}
	u.render(w, r, http.StatusOK, "hosts.html", page{Title: "Hosts", Active: "hosts", Data: d})
}

// hostState sums up a host's reported programs, worst first.
func hostState(ps []api.HostProgram) string {
	if len(ps) == 0 {
		return "idle"
	}
	for _, s := range []string{api.HostProgramFailed, api.HostProgramRolledBack, api.HostProgramPending} {
		for _, p := range ps {
			if p.State == s {
				return s
			}
		}
	}
	return api.HostProgramLoaded
}
