package web

// Read-only overview queries the UI needs at archive scale (thousands of
// kernels, tens of thousands of artifacts) in one round trip each, where
// the store's per-item functions would mean one query per row. Everything
// that changes state goes through the store, build and archive packages.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/store"
)

// latestRevisions selects each program's newest revision id (pid, rid).
const latestRevisions = `SELECT p.id AS pid, (SELECT r.id FROM revisions r WHERE r.program_id = p.id
	ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS rid FROM programs p`

// programRow is one line of the programs page.
type programRow struct {
	ID        int64
	Name      string
	UpdatedAt time.Time
	Revision  string // latest revision digest ("" when none)
	Entry     string
	PushedBy  string
	PushedAt  time.Time
	Arches    []archRow
}

// archRow is a program's latest revision for one arch: its build(s) and
// the kernels its artifacts cover.
type archRow struct {
	Arch      string
	BuildID   int64 // the build (CO-RE), or one of them (per-kernel)
	State     string
	PerKernel bool
	Builds    map[string]int // per-kernel builds by state
	Kernels   int            // kernels of the arch in the archive
	Tally
}

// Tally counts artifacts by outcome.
type Tally struct {
	OK, Poisoned, Unsupported, Failed, Error, Pending int
}

func (c Tally) Done() int  { return c.OK + c.Poisoned + c.Unsupported + c.Failed }
func (c Tally) Total() int { return c.Done() + c.Error + c.Pending }

func (c *Tally) add(state, status string, n int) {
	switch state {
	case "done":
		switch status {
		case "ok":
			c.OK += n
		case "poisoned":
			c.Poisoned += n
		case "unsupported":
			c.Unsupported += n
		default:
			c.Failed += n
		}
	case "error":
		c.Error += n
	default:
		c.Pending += n
	}
}

func (c *Tally) merge(o Tally) {
	c.OK += o.OK
	c.Poisoned += o.Poisoned
	c.Unsupported += o.Unsupported
	c.Failed += o.Failed
	c.Error += o.Error
	c.Pending += o.Pending
}

// likeContains escapes s for a LIKE substring match.
func likeContains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}

// kernelsPerArch counts the archive's kernels by arch.
func (u *UI) kernelsPerArch(ctx context.Context) (map[string]int, error) {
	rows, err := u.cfg.DB.SQL().QueryContext(ctx, `SELECT arch, COUNT(*) FROM kernels GROUP BY arch`)
	if err != nil {
		return nil, fmt.Errorf("count kernels: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var arch string
		var n int
		if err := rows.Scan(&arch, &n); err != nil {
			return nil, err
		}
		out[arch] = n
	}
	return out, rows.Err()
}

// programOverview lists programs whose name contains q (all when q is
// empty), each with its latest revision, that revision's builds by arch
// and the artifacts covering the archive.
func (u *UI) programOverview(ctx context.Context, q string) ([]programRow, error) {
	db := u.cfg.DB.SQL()
	// The matching programs and their latest revisions, once per query.
	latest := `WITH l AS (SELECT p.id AS pid, (SELECT r.id FROM revisions r WHERE r.program_id = p.id
		ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS rid FROM programs p WHERE p.name LIKE ? ESCAPE '\') `
	like := likeContains(q)
	rows, err := db.QueryContext(ctx, latest+`SELECT p.id, p.name, p.updated_at, COALESCE(r.digest, ''),
			COALESCE(r.entry, ''), COALESCE(r.pushed_by, ''), r.created_at
		FROM l JOIN programs p ON p.id = l.pid LEFT JOIN revisions r ON r.id = l.rid ORDER BY p.name`, like)
	if err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	var out []programRow
	index := map[int64]int{}
	for rows.Next() {
		var p programRow
		var pushed sql.NullTime
		if err := rows.Scan(&p.ID, &p.Name, &p.UpdatedAt, &p.Revision, &p.Entry, &p.PushedBy, &pushed); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list programs: %w", err)
		}
		p.UpdatedAt = p.UpdatedAt.UTC()
		if pushed.Valid {
			p.PushedAt = pushed.Time.UTC()
		}
		index[p.ID] = len(out)
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	perArch, err := u.kernelsPerArch(ctx)
	if err != nil {
		return nil, err
	}
	type key struct {
		pid  int64
		arch string
	}
	arches := map[key]*archRow{}
	byBuild := map[int64]*archRow{}
	var order []key
	// The builds of the latest revisions.
	rows, err = db.QueryContext(ctx, latest+`SELECT l.pid, b.id, b.arch, b.state, b.kernel_id IS NOT NULL
		FROM l JOIN builds b ON b.revision_id = l.rid ORDER BY l.pid, b.arch, b.id`, like)
	if err != nil {
		return nil, fmt.Errorf("list programs: builds: %w", err)
	}
	for rows.Next() {
		var (
			k         key
			id        int64
			state     string
			perKernel bool
		)
		if err := rows.Scan(&k.pid, &id, &k.arch, &state, &perKernel); err != nil {
			rows.Close()
			return nil, err
		}
		a := arches[k]
		if a == nil {
			a = &archRow{Arch: k.arch, Kernels: perArch[k.arch], Builds: map[string]int{}}
			arches[k] = a
			order = append(order, k)
		}
		a.PerKernel = a.PerKernel || perKernel
		a.Builds[state]++
		a.BuildID = max(a.BuildID, id)
		a.State = summarizeStates(a.Builds)
		byBuild[id] = a
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Their artifacts by outcome: an index-only count, grouped in index
	// order (no sort).
	rows, err = db.QueryContext(ctx, `SELECT a.build_id, a.state, a.status, COUNT(*) FROM artifacts a
		WHERE a.build_id IN (`+latest+`SELECT b.id FROM l JOIN builds b ON b.revision_id = l.rid)
		GROUP BY a.build_id, a.state, a.status`, like)
	if err != nil {
		return nil, fmt.Errorf("list programs: artifacts: %w", err)
	}
	for rows.Next() {
		var (
			id            int64
			state, status string
			n             int
		)
		if err := rows.Scan(&id, &state, &status, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if a := byBuild[id]; a != nil {
			a.add(state, status, n)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, k := range order {
		if i, ok := index[k.pid]; ok {
			out[i].Arches = append(out[i].Arches, *arches[k])
		}
	}
	return out, nil
}

// summarizeStates names the state of an arch's builds: the one state when
// all agree, else the most urgent one.
func summarizeStates(m map[string]int) string {
	for _, s := range []string{"failed", "running", "queued"} {
		if m[s] > 0 {
			return s
		}
	}
	return "succeeded"
}

// matrixKernel is a kernel row of the coverage matrix.
type matrixKernel struct {
	ID                             int64
	KID                            string
	Distro, Version, Arch, Release string
}

// kernelsOfArches lists the kernels of the given arches, light columns only.
func (u *UI) kernelsOfArches(ctx context.Context, arches []string) ([]matrixKernel, error) {
	if len(arches) == 0 {
		return nil, nil
	}
	args := make([]any, len(arches))
	for i, a := range arches {
		args[i] = a
	}
	rows, err := u.cfg.DB.SQL().QueryContext(ctx, `SELECT id, kid, distro, version, arch, release FROM kernels
		WHERE arch IN (?`+strings.Repeat(",?", len(arches)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	defer rows.Close()
	var out []matrixKernel
	for rows.Next() {
		var k matrixKernel
		if err := rows.Scan(&k.ID, &k.KID, &k.Distro, &k.Version, &k.Arch, &k.Release); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// cellReport is the relocation report as the matrix reads it. It is
// lenient: fields the report may grow (a per-program "verified" verdict
// from booting the kernel) are read when present.
type cellReport struct {
	Programs []struct {
		manifest.ProgramReport
		Verified *manifest.Verification `json:"verified,omitempty"`
	} `json:"programs"`
	Verified map[string]manifest.Verification `json:"verified,omitempty"`
}

// revisionArtifact is one artifact of a revision, for the matrix.
type revisionArtifact struct {
	ID        int64
	BuildID   int64
	KernelID  int64
	State     string
	Status    string
	Error     string
	Report    *cellReport
	PerKernel bool
	// Verify is the verification on the booted kernel, when the server
	// verifies (see UI.verifyTable).
	Verify verifyRow
}

// verifyRow is an artifact's verification on its real kernel.
type verifyRow struct {
	State, Result, Reason string
	Programs              []programVerdict
}

// programVerdict is one program's verdict in one load mode.
type programVerdict struct {
	Program      string `json:"program"`
	Mode         string `json:"mode"`
	Accepted     bool   `json:"accepted"`
	Instructions int    `json:"instructions"`
	Error        string `json:"error"`
}

// verdicts sums up each program's verdicts over its load modes: accepted
// only when every mode was.
func (v verifyRow) verdicts() map[string]*manifest.Verification {
	if v.State != "done" || (v.Result != "verified" && v.Result != "rejected") {
		return nil
	}
	out := map[string]*manifest.Verification{}
	for _, p := range v.Programs {
		cur, ok := out[p.Program]
		if !ok {
			cur = &manifest.Verification{Accepted: true}
			out[p.Program] = cur
		}
		cur.Instructions = max(cur.Instructions, p.Instructions)
		if !p.Accepted {
			cur.Accepted = false
			if cur.Error == "" {
				cur.Error = p.Error
				if p.Mode != "" {
					cur.Error = p.Mode + ": " + p.Error
				}
			}
		}
	}
	return out
}

// hasVerifications reports whether the database has the verifications
// table of the real-kernel verification (artifact_id, state, result,
// programs), which the UI then shows.
func hasVerifications(ctx context.Context, db *sql.DB) bool {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('verifications')
		WHERE name IN ('artifact_id', 'state', 'result', 'reason', 'programs')`).Scan(&n)
	return err == nil && n == 5
}

// revisionArtifacts lists the artifacts of a revision's builds (the newest
// build per kernel wins).
func (u *UI) revisionArtifacts(ctx context.Context, revisionID int64) ([]revisionArtifact, error) {
	cols, join := `'', '', '', ''`, ``
	if u.verifications {
		cols = `COALESCE(v.state, ''), COALESCE(v.result, ''), COALESCE(v.reason, ''), COALESCE(v.programs, '')`
		join = ` LEFT JOIN verifications v ON v.artifact_id = a.id`
	}
	rows, err := u.cfg.DB.SQL().QueryContext(ctx, `SELECT a.id, a.build_id, a.kernel_id, a.state, a.status, a.error, a.report,
			b.kernel_id IS NOT NULL, `+cols+`
		FROM builds b JOIN artifacts a ON a.build_id = b.id`+join+`
		WHERE b.revision_id = ? ORDER BY a.build_id, a.kernel_id`, revisionID)
	if err != nil {
		return nil, fmt.Errorf("artifacts of revision: %w", err)
	}
	defer rows.Close()
	var out []revisionArtifact
	var report, verdicts sql.RawBytes
	for rows.Next() {
		var a revisionArtifact
		if err := rows.Scan(&a.ID, &a.BuildID, &a.KernelID, &a.State, &a.Status, &a.Error, &report, &a.PerKernel,
			&a.Verify.State, &a.Verify.Result, &a.Verify.Reason, &verdicts); err != nil {
			return nil, err
		}
		if len(report) > 0 {
			a.Report = new(cellReport)
			if err := json.Unmarshal(report, a.Report); err != nil {
				return nil, fmt.Errorf("artifact %d report: %w", a.ID, err)
			}
		}
		if len(verdicts) > 2 { // not "[]"
			if err := json.Unmarshal(verdicts, &a.Verify.Programs); err != nil {
				return nil, fmt.Errorf("artifact %d verification: %w", a.ID, err)
			}
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// artifactVerification returns an artifact's verification, if any.
func (u *UI) artifactVerification(ctx context.Context, artifactID int64) (*verifyRow, error) {
	if !u.verifications {
		return nil, nil
	}
	var (
		v     verifyRow
		progs string
	)
	err := u.cfg.DB.SQL().QueryRowContext(ctx, `SELECT state, result, reason, programs FROM verifications
		WHERE artifact_id = ?`, artifactID).Scan(&v.State, &v.Result, &v.Reason, &progs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("verification of artifact %d: %w", artifactID, err)
	}
	if err := json.Unmarshal([]byte(progs), &v.Programs); err != nil {
		return nil, fmt.Errorf("verification of artifact %d: %w", artifactID, err)
	}
	return &v, nil
}

// revisionID resolves a program's revision digest to its row id.
func (u *UI) revisionID(ctx context.Context, program, digest string) (int64, error) {
	var id int64
	err := u.cfg.DB.SQL().QueryRowContext(ctx, `SELECT r.id FROM revisions r JOIN programs p ON p.id = r.program_id
		WHERE p.name = ? AND r.digest = ?`, program, digest).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("revision %s of %s: %w", short(digest), program, err)
	}
	return id, nil
}

// buildArtifactCounts counts a build's artifacts by outcome.
func (u *UI) buildArtifactCounts(ctx context.Context, buildID int64) (Tally, error) {
	var c Tally
	rows, err := u.cfg.DB.SQL().QueryContext(ctx, `SELECT state, status, COUNT(*) FROM artifacts WHERE build_id = ?
		GROUP BY state, status`, buildID)
	if err != nil {
		return c, fmt.Errorf("artifacts of build %d: %w", buildID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var state, status string
		var n int
		if err := rows.Scan(&state, &status, &n); err != nil {
			return c, err
		}
		c.add(state, status, n)
	}
	return c, rows.Err()
}

// revisionPending counts the unfinished builds and relocations of a
// revision (a page showing it follows changes while there are some). A
// build that succeeded moments ago without artifacts yet, for an arch the
// archive has kernels of, counts too: its relocations are being queued.
func (u *UI) revisionPending(ctx context.Context, revisionID int64) (int, error) {
	var builds, arts, queueing int
	err := u.cfg.DB.SQL().QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM builds WHERE revision_id = ? AND state IN ('queued', 'running')),
		(SELECT COUNT(*) FROM builds b JOIN artifacts a ON a.build_id = b.id
			WHERE b.revision_id = ? AND a.state IN ('queued', 'running')),
		(SELECT COUNT(*) FROM builds b WHERE b.revision_id = ? AND b.state = 'succeeded' AND b.finished_at > ?
			AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.build_id = b.id)
			AND EXISTS (SELECT 1 FROM kernels k WHERE k.arch = b.arch))`,
		revisionID, revisionID, revisionID, time.Now().UTC().Add(-queueingGrace)).Scan(&builds, &arts, &queueing)
	return builds + arts + queueing, err
}

// queueingGrace is how long after a build succeeds a page waits for its
// relocations to be queued.
const queueingGrace = 30 * time.Second

// kernelRow is one line of the kernels page.
type kernelRow struct {
	ID                             int64
	KID                            string
	Distro, Version, Arch, Release string
	BTFSize                        int64
	Modules                        int
	Source                         string
	// Trust is "unverified" for BTF a host uploaded (SourceHost).
	Trust, SourceHost string
	CreatedAt         time.Time
	Tally
}

// kernelOverview lists the archive's kernels with the outcome of the
// artifacts of every program's latest revision for each.
func (u *UI) kernelOverview(ctx context.Context) ([]kernelRow, error) {
	db := u.cfg.DB.SQL()
	rows, err := db.QueryContext(ctx, `SELECT id, kid, distro, version, arch, release, btf_size, modules_count, source, trust,
		source_host, created_at FROM kernels`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	var out []kernelRow
	index := map[int64]int{}
	for rows.Next() {
		var k kernelRow
		if err := rows.Scan(&k.ID, &k.KID, &k.Distro, &k.Version, &k.Arch, &k.Release, &k.BTFSize, &k.Modules,
			&k.Source, &k.Trust, &k.SourceHost, &k.CreatedAt); err != nil {
			rows.Close()
			return nil, err
		}
		index[k.ID] = len(out)
		out = append(out, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// One ordered pass over the kernel-first artifact index, keeping the
	// latest revisions' builds: no sort of the tens of thousands of rows.
	rows, err = db.QueryContext(ctx, `SELECT a.kernel_id, a.state, a.status, COUNT(*)
		FROM artifacts a INDEXED BY artifacts_kernel_summary
		WHERE a.build_id IN (SELECT b.id FROM (`+latestRevisions+`) l JOIN builds b ON b.revision_id = l.rid)
		GROUP BY a.kernel_id, a.state, a.status`)
	if err != nil {
		return nil, fmt.Errorf("count artifacts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id            int64
			state, status string
			n             int
		)
		if err := rows.Scan(&id, &state, &status, &n); err != nil {
			return nil, err
		}
		if i, ok := index[id]; ok {
			out[i].add(state, status, n)
		}
	}
	return out, rows.Err()
}

// kernelProgram is a program's latest revision relocated for one kernel.
type kernelProgram struct {
	ArtifactID int64
	Program    string
	Revision   string
	BuildID    int64
	State      string
	Status     string
	Error      string
	Poisoned   int
}

// kernelPrograms lists, for one kernel, the artifacts of every program's
// latest revision.
func (u *UI) kernelPrograms(ctx context.Context, kernelID int64) ([]kernelProgram, error) {
	rows, err := u.cfg.DB.SQL().QueryContext(ctx, `SELECT a.id, p.name, r.digest, b.id, a.state, a.status, a.error
		FROM (`+latestRevisions+`) l JOIN programs p ON p.id = l.pid JOIN revisions r ON r.id = l.rid
		JOIN builds b ON b.revision_id = r.id JOIN artifacts a ON a.build_id = b.id
		WHERE a.kernel_id = ? ORDER BY p.name, a.id DESC`, kernelID)
	if err != nil {
		return nil, fmt.Errorf("programs of kernel: %w", err)
	}
	defer rows.Close()
	var out []kernelProgram
	for rows.Next() {
		var k kernelProgram
		if err := rows.Scan(&k.ArtifactID, &k.Program, &k.Revision, &k.BuildID, &k.State, &k.Status, &k.Error); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
