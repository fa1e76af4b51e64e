package web

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/manifest"
)

type programsData struct {
	Query    string
	Programs []programRow
	Total    int
}

func (u *UI) programsPage(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	ps, err := u.cfg.DB.ProgramOverview(r.Context(), q)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "programs.html", page{Title: "Programs", Active: "programs",
		Data: programsData{Query: q, Programs: ps, Total: len(ps)}})
}

// matrix is the kernel coverage matrix of one revision: a row per kernel,
// grouped by distro/version/arch, a column per BPF program.
type matrix struct {
	Columns []string
	Arches  []string
	Span    int // columns of a group header
	Groups  []matrixGroup
	Kernels int // rows before filtering
	Shown   int
	Tally
}

type matrixGroup struct {
	Distro, Version, Arch string
	Rows                  []matrixRow
	Tally
}

type matrixRow struct {
	KID        string
	Release    string
	ArtifactID int64
	State      string // artifact state; "" when there is no artifact
	Status     string
	Error      string
	Cells      []matrixCell
}

// matrixCell is one BPF program on one kernel.
type matrixCell struct {
	// Status is ok, poisoned, unsupported or failed (from the report), or
	// for the whole row queued, running, error (relocation failed) or none
	// (no artifact).
	Status string
	Error  string
	// Reason names the kernel features an unsupported program lacks.
	Reason      string
	Relocations int
	Poisoned    []manifest.Poison
	Missing     []manifest.Target
	// Verified is the verifier's verdict on the real kernel, when known.
	Verified   *manifest.Verification
	ArtifactID int64
}

// Detail reports whether the cell has anything to show when opened.
func (c matrixCell) Detail() bool {
	return c.Error != "" || c.Reason != "" || len(c.Poisoned) > 0 || len(c.Missing) > 0 || c.Verified != nil
}

// Problem reports whether the cell is anything but a clean ok.
func (c matrixCell) Problem() bool { return c.Status != "ok" || len(c.Missing) > 0 }

type programData struct {
	Program   api.Program
	Selected  *api.Revision
	Matrix    *matrix
	Problems  bool // show only rows with a problem
	From, To  string
	PerKernel bool
}

func (u *UI) programPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	p, err := u.cfg.DB.Program(ctx, name)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := programData{Program: p, Problems: r.URL.Query().Get("only") == "problems"}
	if len(p.Revisions) == 0 {
		u.render(w, r, http.StatusOK, "program.html", page{Title: name, Active: "programs", Data: d})
		return
	}
	d.Selected = &p.Revisions[0]
	if want := r.URL.Query().Get("rev"); want != "" {
		d.Selected = nil
		for i := range p.Revisions {
			if strings.HasPrefix(p.Revisions[i].Digest, want) {
				d.Selected = &p.Revisions[i]
				break
			}
		}
		if d.Selected == nil {
			u.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Program %s has no revision %s.", name, want))
			return
		}
	}
	d.To = p.Revisions[0].Digest
	if len(p.Revisions) > 1 {
		d.From = p.Revisions[1].Digest
	}
	rid, err := u.cfg.DB.RevisionID(ctx, name, d.Selected.Digest)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d.Matrix, err = u.buildMatrix(r, d.Selected, rid, d.Problems)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for _, b := range d.Selected.Builds {
		d.PerKernel = d.PerKernel || b.Kernel != ""
	}
	pg := page{Title: name, Active: "programs", Data: d}
	if u.cfg.Builds != nil {
		if n, err := u.cfg.DB.RevisionPending(ctx, rid, queueingGrace); err == nil && n > 0 {
			pg.Live, pg.Events = "reload", "/programs/"+pathEscape(name)+"/events?rev="+d.Selected.Digest
		}
	}
	u.render(w, r, http.StatusOK, "program.html", pg)
}

// buildMatrix lays out a revision's artifacts: kernels of the arches it was
// built for, grouped by distro/version/arch, against the BPF programs of
// its builds.
func (u *UI) buildMatrix(r *http.Request, rev *api.Revision, rid int64, onlyProblems bool) (*matrix, error) {
	ctx := r.Context()
	m := &matrix{}
	var arches []string
	seen := map[string]bool{}
	for _, b := range rev.Builds {
		if !slices.Contains(arches, b.Arch) {
			arches = append(arches, b.Arch)
		}
		if b.Inspection != nil {
			for _, p := range b.Inspection.Programs {
				if !seen[p.Name] {
					seen[p.Name] = true
					m.Columns = append(m.Columns, p.Name)
				}
			}
		}
	}
	arts, err := u.revisionArtifacts(ctx, rid)
	if err != nil {
		return nil, err
	}
	byKernel := make(map[int64]*revisionArtifact, len(arts))
	for i := range arts {
		a := &arts[i]
		if old, ok := byKernel[a.KernelID]; !ok || a.BuildID > old.BuildID {
			byKernel[a.KernelID] = a
		}
		if a.Report != nil {
			for _, p := range a.Report.Programs {
				if !seen[p.Name] {
					seen[p.Name] = true
					m.Columns = append(m.Columns, p.Name)
				}
			}
		}
	}
	slices.Sort(m.Columns)
	m.Arches, m.Span = arches, len(m.Columns)+2
	col := make(map[string]int, len(m.Columns))
	for i, c := range m.Columns {
		col[c] = i
	}
	ks, err := u.cfg.DB.KernelsOfArches(ctx, arches)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ks, func(a, b matrixKernel) int {
		return cmp.Or(strings.Compare(a.Distro, b.Distro), naturalCompare(a.Version, b.Version),
			strings.Compare(a.Arch, b.Arch), -kernel.CompareRelease(a.Release, b.Release))
	})
	m.Kernels = len(ks)
	var g *matrixGroup
	for _, k := range ks {
		row := matrixRow{KID: k.KID, Release: k.Release, Cells: make([]matrixCell, len(m.Columns))}
		var c Tally
		a := byKernel[k.ID]
		if a != nil {
			for i := range row.Cells {
				row.Cells[i].ArtifactID = a.ID
			}
		}
		switch {
		case a == nil:
			for i := range row.Cells {
				row.Cells[i].Status = "none"
			}
		case a.State == api.ArtifactDone && a.Report != nil:
			row.ArtifactID, row.State, row.Status = a.ID, a.State, a.Status
			for i := range row.Cells {
				row.Cells[i].Status = "none"
			}
			verdicts := verdicts(a.Verification)
			for _, p := range a.Report.Programs {
				cell := &row.Cells[col[p.Name]]
				cell.Status, cell.Error, cell.Relocations, cell.Poisoned = p.Status, p.Error, p.Relocations, p.Poisoned
				cell.Reason = p.Reason
				for _, t := range p.Targets {
					if t.Status == "missing" {
						cell.Missing = append(cell.Missing, t)
					}
				}
				cell.Verified = p.Verified
				if v, ok := a.Report.Verified[p.Name]; ok && cell.Verified == nil {
					cell.Verified = &v
				}
				if v, ok := verdicts[p.Name]; ok && cell.Verified == nil {
					cell.Verified = v
				}
			}
			c.Add(a.State, a.Status, 1)
		default:
			row.ArtifactID, row.State, row.Error = a.ID, a.State, a.Error
			st := a.State
			if st == api.ArtifactDone { // done without a report: an old row
				st = a.Status
			}
			for i := range row.Cells {
				row.Cells[i].Status, row.Cells[i].Error = st, a.Error
			}
			c.Add(a.State, a.Status, 1)
		}
		m.Merge(c)
		if g == nil || g.Distro != k.Distro || g.Version != k.Version || g.Arch != k.Arch {
			m.Groups = append(m.Groups, matrixGroup{Distro: k.Distro, Version: k.Version, Arch: k.Arch})
			g = &m.Groups[len(m.Groups)-1]
		}
		g.Merge(c)
		if onlyProblems && !row.problem() {
			continue
		}
		g.Rows = append(g.Rows, row)
		m.Shown++
	}
	if onlyProblems {
		groups := m.Groups[:0]
		for _, g := range m.Groups {
			if len(g.Rows) > 0 {
				groups = append(groups, g)
			}
		}
		m.Groups = groups
	}
	return m, nil
}

func (r matrixRow) problem() bool {
	for _, c := range r.Cells {
		if c.Problem() {
			return true
		}
	}
	return false
}

// naturalCompare orders strings with runs of digits compared as numbers
// (so distro version 9 comes before 10).
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		ad, bd := isDigit(a[0]), isDigit(b[0])
		if ad && bd {
			i, j := 0, 0
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[i:], b[j:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// programEvents streams "change" while a revision's builds or relocations
// are unfinished, and "final" once they are all done: the page reloads.
func (u *UI) programEvents(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rid, err := u.cfg.DB.RevisionID(r.Context(), name, r.URL.Query().Get("rev"))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.stream(w, r, func() (string, bool, error) {
		n, err := u.cfg.DB.RevisionPending(r.Context(), rid, queueingGrace)
		return fmt.Sprintf(`{"pending":%d}`, n), n == 0, err
	})
}
