package web

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/server/blob"
)

// Edit operations of a line diff.
const (
	opEqual  = ' '
	opDelete = '-'
	opInsert = '+'
)

type edit struct {
	Op   byte
	Text string
	A, B int // 1-based line numbers in a and b (0 when the side has none)
}

// maxEditDistance bounds Myers' search; beyond it the files are shown as
// replaced wholesale (still a correct, if long, diff).
const maxEditDistance = 1000

// diffLines returns a shortest edit script turning a into b (Myers'
// O(ND) algorithm, after trimming the common prefix and suffix).
func diffLines(a, b []string) []edit {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	out := make([]edit, 0, len(a)+len(b))
	for i := 0; i < pre; i++ {
		out = append(out, edit{Op: opEqual, Text: a[i], A: i + 1, B: i + 1})
	}
	out = append(out, myers(a[pre:len(a)-suf], b[pre:len(b)-suf], pre)...)
	for i := 0; i < suf; i++ {
		ai, bi := len(a)-suf+i, len(b)-suf+i
		out = append(out, edit{Op: opEqual, Text: a[ai], A: ai + 1, B: bi + 1})
	}
	return out
}

// myers diffs a and b, whose line numbers start after off lines.
func myers(a, b []string, off int) []edit {
	n, m := len(a), len(b)
	replace := func() []edit {
		out := make([]edit, 0, n+m)
		for i, s := range a {
			out = append(out, edit{Op: opDelete, Text: s, A: off + i + 1})
		}
		for j, s := range b {
			out = append(out, edit{Op: opInsert, Text: s, B: off + j + 1})
		}
		return out
	}
	if n == 0 || m == 0 {
		return replace()
	}
	max := n + m
	if max > 2*maxEditDistance {
		max = 2 * maxEditDistance
	}
	if max > n+m {
		max = n + m
	}
	// v[k+max] is the furthest x on diagonal k; trace keeps v per step d.
	v := make([]int, 2*max+2)
	var trace [][]int
	found := false
	var dEnd int
	for d := 0; d <= max && d <= maxEditDistance; d++ {
		snap := make([]int, 2*d+3)
		// Save only the diagonals reachable at d (−d-1 … d+1).
		for k := -d - 1; k <= d+1; k++ {
			if k+max >= 0 && k+max < len(v) {
				snap[k+d+1] = v[k+max]
			}
		}
		trace = append(trace, snap)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[k-1+max] < v[k+1+max]) {
				x = v[k+1+max] // down: insertion
			} else {
				x = v[k-1+max] + 1 // right: deletion
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[k+max] = x
			if x >= n && y >= m {
				found, dEnd = true, d
				break
			}
		}
		if found {
			break
		}
	}
	if !found {
		return replace()
	}
	// Backtrack from (n, m) through the saved steps.
	var rev []edit
	x, y := n, m
	for d := dEnd; d > 0; d-- {
		snap := trace[d] // v as it was before step d
		get := func(k int) int { return snap[k+d+1] }
		k := x - y
		var prevK int
		if k == -d || (k != d && get(k-1) < get(k+1)) {
			prevK = k + 1
		} else {
			prevK = k - 1
		}
		prevX := get(prevK)
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			x--
			y--
			rev = append(rev, edit{Op: opEqual, Text: a[x], A: off + x + 1, B: off + y + 1})
		}
		if x == prevX {
			y--
			rev = append(rev, edit{Op: opInsert, Text: b[y], B: off + y + 1})
		} else {
			x--
			rev = append(rev, edit{Op: opDelete, Text: a[x], A: off + x + 1})
		}
	}
	for x > 0 && y > 0 {
		x--
		y--
		rev = append(rev, edit{Op: opEqual, Text: a[x], A: off + x + 1, B: off + y + 1})
	}
	out := make([]edit, len(rev))
	for i, e := range rev {
		out[len(rev)-1-i] = e
	}
	return out
}

// hunk is a unified diff hunk.
type hunk struct {
	Header string // @@ -a,n +b,m @@
	Lines  []edit
}

// hunks groups an edit script into unified diff hunks with ctx lines of
// context.
func hunks(edits []edit, ctx int) []hunk {
	var out []hunk
	i := 0
	for i < len(edits) {
		// Find the next change.
		for i < len(edits) && edits[i].Op == opEqual {
			i++
		}
		if i == len(edits) {
			break
		}
		start := max(i-ctx, 0)
		end := i
		for {
			for end < len(edits) && edits[end].Op != opEqual {
				end++
			}
			// Equal run after the change: merge when the next change is
			// within 2*ctx lines.
			run := end
			for run < len(edits) && edits[run].Op == opEqual {
				run++
			}
			if run < len(edits) && run-end <= 2*ctx {
				end = run
				continue
			}
			end = min(end+ctx, len(edits))
			break
		}
		h := hunk{Lines: edits[start:end]}
		var aStart, aLen, bStart, bLen int
		for _, e := range h.Lines {
			if e.Op != opInsert {
				if aStart == 0 {
					aStart = e.A
				}
				aLen++
			}
			if e.Op != opDelete {
				if bStart == 0 {
					bStart = e.B
				}
				bLen++
			}
		}
		if aLen == 0 { // pure insertion: the line before
			aStart = lineBefore(edits, start, true)
		}
		if bLen == 0 {
			bStart = lineBefore(edits, start, false)
		}
		h.Header = fmt.Sprintf("@@ -%s +%s @@", rangeOf(aStart, aLen), rangeOf(bStart, bLen))
		out = append(out, h)
		i = end
	}
	return out
}

// lineBefore is the number of the last line of a (or b) before edits[i].
func lineBefore(edits []edit, i int, a bool) int {
	for j := i - 1; j >= 0; j-- {
		if a && edits[j].A > 0 {
			return edits[j].A
		}
		if !a && edits[j].B > 0 {
			return edits[j].B
		}
	}
	return 0
}

func rangeOf(start, n int) string {
	if n == 1 {
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d,%d", start, n)
}

// splitLines splits text into lines without their newlines; noEOL reports
// a last line without one.
func splitLines(s string) (lines []string, noEOL bool) {
	if s == "" {
		return nil, false
	}
	noEOL = !strings.HasSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\n")
	return strings.Split(s, "\n"), noEOL
}

// fileDiff is the diff of one file between two revisions.
type fileDiff struct {
	Name    string
	Change  string // added, removed, modified, binary
	Hunks   []hunk
	Added   int
	Removed int
	Note    string
}

type diffData struct {
	Program   string
	Revisions []api.Revision
	From, To  string
	Files     []fileDiff
	Unchanged int
}

func (u *UI) readBundle(r *http.Request, program, rev string) (string, *bpfsrc.Bundle, error) {
	digest, bd, entry, err := u.cfg.DB.RevisionBlob(r.Context(), program, rev)
	if err != nil {
		return "", nil, err
	}
	d, err := blob.ParseDigest(bd)
	if err != nil {
		return "", nil, err
	}
	rc, err := u.cfg.Blobs.Get(r.Context(), d)
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	b, err := bpfsrc.ReadTarGz(rc, entry, bpfsrc.DefaultLimits)
	if err != nil {
		return "", nil, fmt.Errorf("revision %s of %s: %w", short(digest), program, err)
	}
	return digest, b, nil
}

func (u *UI) diffPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	revs, err := u.cfg.DB.Revisions(r.Context(), name)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	if from == "" || to == "" {
		u.errorPage(w, r, http.StatusBadRequest, "Choose two revisions to compare.")
		return
	}
	fromDigest, a, err := u.readBundle(r, name, from)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	toDigest, b, err := u.readBundle(r, name, to)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := diffData{Program: name, Revisions: revs, From: fromDigest, To: toDigest}
	d.Files, d.Unchanged = diffBundles(a, b)
	u.render(w, r, http.StatusOK, "diff.html", page{Title: "Diff · " + name, Active: "programs", Data: d})
}

// diffBundles diffs two bundles file by file (their files are sorted by
// name).
func diffBundles(a, b *bpfsrc.Bundle) ([]fileDiff, int) {
	var out []fileDiff
	unchanged := 0
	i, j := 0, 0
	for i < len(a.Files) || j < len(b.Files) {
		switch {
		case j == len(b.Files) || (i < len(a.Files) && a.Files[i].Name < b.Files[j].Name):
			out = append(out, diffFile(a.Files[i].Name, a.Files[i].Data, nil, "removed"))
			i++
		case i == len(a.Files) || b.Files[j].Name < a.Files[i].Name:
			out = append(out, diffFile(b.Files[j].Name, nil, b.Files[j].Data, "added"))
			j++
		default:
			if bytes.Equal(a.Files[i].Data, b.Files[j].Data) {
				unchanged++
			} else {
				out = append(out, diffFile(a.Files[i].Name, a.Files[i].Data, b.Files[j].Data, "modified"))
			}
			i++
			j++
		}
	}
	return out, unchanged
}

func diffFile(name string, a, b []byte, change string) fileDiff {
	f := fileDiff{Name: name, Change: change}
	if bytes.IndexByte(a, 0) >= 0 || bytes.IndexByte(b, 0) >= 0 {
		f.Change, f.Note = "binary", fmt.Sprintf("Binary file (%d → %d bytes).", len(a), len(b))
		return f
	}
	al, aNoEOL := splitLines(string(a))
	bl, bNoEOL := splitLines(string(b))
	edits := diffLines(al, bl)
	for _, e := range edits {
		switch e.Op {
		case opInsert:
			f.Added++
		case opDelete:
			f.Removed++
		}
	}
	f.Hunks = hunks(edits, 3)
	if aNoEOL != bNoEOL && change == "modified" {
		f.Note = "The newline at the end of the file changed."
	}
	return f
}

func (u *UI) sourceDownload(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	digest, bd, _, err := u.cfg.DB.RevisionBlob(r.Context(), name, r.PathValue("rev"))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.serveBlob(w, r, bd, "application/gzip", fmt.Sprintf("%s-%s.tar.gz", name, short(digest)), true)
}
