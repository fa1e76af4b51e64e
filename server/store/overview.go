package store

// Overviews: the read-only questions the web UI asks at archive scale
// (thousands of kernels, tens of thousands of artifacts), each answered in
// one round trip or a few, where the per-item methods would mean one
// query per row.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// Tally counts artifacts by outcome.
type Tally struct {
	OK, Poisoned, Unsupported, Failed, Error, Pending int
}

// Done counts the artifacts relocated, whatever their status.
func (c Tally) Done() int { return c.OK + c.Poisoned + c.Unsupported + c.Failed }

// Total counts every artifact.
func (c Tally) Total() int { return c.Done() + c.Error + c.Pending }

// Add counts n artifacts in state (an api.Artifact* state) with status
// (ok, poisoned, unsupported or failed, for done ones).
func (c *Tally) Add(state, status string, n int) {
	switch state {
	case api.ArtifactDone:
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
	case api.ArtifactError:
		c.Error += n
	default:
		c.Pending += n
	}
}

// Merge adds o's counts to c.
func (c *Tally) Merge(o Tally) {
	c.OK += o.OK
	c.Poisoned += o.Poisoned
	c.Unsupported += o.Unsupported
	c.Failed += o.Failed
	c.Error += o.Error
	c.Pending += o.Pending
}

// latestRevisions selects each program's newest revision id (pid, rid).
const latestRevisions = `SELECT p.id AS pid, (SELECT r.id FROM revisions r WHERE r.program_id = p.id
	ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS rid FROM programs p`

// perKernelBuild is 1 for a per-kernel build, 0 for a CO-RE one.
const perKernelBuild = `CASE WHEN b.kernel_id IS NULL THEN 0 ELSE 1 END`

// ProgramSummary is a program with its latest revision, that revision's
// builds by arch and the artifacts covering the archive.
type ProgramSummary struct {
	ID        int64
	Name      string
	UpdatedAt time.Time
	Revision  string // latest revision digest ("" when none)
	Entry     string
	PushedBy  string
	PushedAt  time.Time // zero when there is no revision
	Arches    []ArchSummary
}

// ArchSummary is a program's latest revision for one arch: its build(s)
// and the kernels its artifacts cover.
type ArchSummary struct {
	Arch      string
	BuildID   int64 // the build (CO-RE), or the newest of them (per-kernel)
	State     string
	PerKernel bool
	Builds    map[string]int // builds by state
	Kernels   int            // kernels of the arch in the archive
	Tally
}

// summarizeStates names the state of an arch's builds: the one state when
// all agree, else the most urgent one.
func summarizeStates(m map[string]int) string {
	for _, s := range []string{api.StateFailed, api.StateRunning, api.StateQueued} {
		if m[s] > 0 {
			return s
		}
	}
	return api.StateSucceeded
}

// likeContains escapes s for a case-insensitive LIKE substring match
// against LOWER(column).
func likeContains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// KernelsPerArch counts the archive's kernels by arch.
func (d *DB) KernelsPerArch(ctx context.Context) (map[string]int, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT arch, COUNT(*) FROM kernels GROUP BY arch`)
	if err != nil {
		return nil, fmt.Errorf("count kernels: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var arch string
		var n int
		if err := rows.Scan(&arch, &n); err != nil {
			return nil, fmt.Errorf("count kernels: %w", err)
		}
		out[arch] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count kernels: %w", err)
	}
	return out, nil
}

// ProgramOverview lists the programs whose name contains nameContains
// (case-insensitively; every program when it is empty), by name, each
// with its latest revision, that revision's builds by arch and their
// artifacts by outcome.
func (d *DB) ProgramOverview(ctx context.Context, nameContains string) ([]ProgramSummary, error) {
	// The matching programs and their latest revisions, once per query.
	latest := `WITH l AS (SELECT p.id AS pid, (SELECT r.id FROM revisions r WHERE r.program_id = p.id
		ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS rid FROM programs p WHERE LOWER(p.name) LIKE ? ESCAPE '\') `
	like := likeContains(nameContains)
	out, err := queryList(ctx, d.db, "program overview", latest+`SELECT p.id, p.name, p.updated_at,
			COALESCE(r.digest, ''), COALESCE(r.entry, ''), COALESCE(r.pushed_by, ''), r.created_at
		FROM l JOIN programs p ON p.id = l.pid LEFT JOIN revisions r ON r.id = l.rid ORDER BY p.name, p.id`, []any{like},
		func(row rowScanner) (ProgramSummary, error) {
			var (
				p      ProgramSummary
				pushed sql.NullTime
			)
			err := row.Scan(&p.ID, &p.Name, &p.UpdatedAt, &p.Revision, &p.Entry, &p.PushedBy, &pushed)
			p.UpdatedAt = p.UpdatedAt.UTC()
			if pushed.Valid {
				p.PushedAt = pushed.Time.UTC()
			}
			return p, err
		})
	if err != nil || len(out) == 0 {
		return out, err
	}
	index := make(map[int64]int, len(out))
	for i, p := range out {
		index[p.ID] = i
	}
	perArch, err := d.KernelsPerArch(ctx)
	if err != nil {
		return nil, err
	}
	type key struct {
		pid  int64
		arch string
	}
	arches := map[key]*ArchSummary{}
	byBuild := map[int64]*ArchSummary{}
	var order []key
	// The builds of the latest revisions.
	rows, err := d.db.QueryContext(ctx, latest+`SELECT l.pid, b.id, b.arch, b.state, `+perKernelBuild+`
		FROM l JOIN builds b ON b.revision_id = l.rid ORDER BY l.pid, b.arch, b.id`, like)
	if err != nil {
		return nil, fmt.Errorf("program overview: builds: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			k         key
			id        int64
			state     string
			perKernel int
		)
		if err := rows.Scan(&k.pid, &id, &k.arch, &state, &perKernel); err != nil {
			return nil, fmt.Errorf("program overview: builds: %w", err)
		}
		a := arches[k]
		if a == nil {
			a = &ArchSummary{Arch: k.arch, Kernels: perArch[k.arch], Builds: map[string]int{}}
			arches[k] = a
			order = append(order, k)
		}
		a.PerKernel = a.PerKernel || perKernel != 0
		a.Builds[state]++
		a.BuildID = max(a.BuildID, id)
		a.State = summarizeStates(a.Builds)
		byBuild[id] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("program overview: builds: %w", err)
	}
	rows.Close()
	// Their artifacts by outcome: an index-only count.
	rows, err = d.db.QueryContext(ctx, latest+`SELECT a.build_id, a.state, a.status, COUNT(*) FROM artifacts a
		WHERE a.build_id IN (SELECT b.id FROM l JOIN builds b ON b.revision_id = l.rid)
		GROUP BY a.build_id, a.state, a.status`, like)
	if err != nil {
		return nil, fmt.Errorf("program overview: artifacts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id            int64
			state, status string
			n             int
		)
		if err := rows.Scan(&id, &state, &status, &n); err != nil {
			return nil, fmt.Errorf("program overview: artifacts: %w", err)
		}
		if a := byBuild[id]; a != nil {
			a.Add(state, status, n)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("program overview: artifacts: %w", err)
	}
	for _, k := range order {
		i := index[k.pid]
		out[i].Arches = append(out[i].Arches, *arches[k])
	}
	return out, nil
}

// KernelName is a kernel's identity, without its blobs.
type KernelName struct {
	ID                             int64
	KID                            string
	Distro, Version, Arch, Release string
}

// KernelsOfArches lists the kernels of the given arches, by kernel id.
func (d *DB) KernelsOfArches(ctx context.Context, arches []string) ([]KernelName, error) {
	if len(arches) == 0 {
		return nil, nil
	}
	args := make([]any, len(arches))
	for i, a := range arches {
		args[i] = a
	}
	return queryList(ctx, d.db, "kernels of arches", `SELECT id, kid, distro, version, arch, release FROM kernels
		WHERE arch IN (?`+strings.Repeat(",?", len(arches)-1)+`) ORDER BY kid`, args,
		func(row rowScanner) (KernelName, error) {
			var k KernelName
			err := row.Scan(&k.ID, &k.KID, &k.Distro, &k.Version, &k.Arch, &k.Release)
			return k, err
		})
}

// ArtifactVerification is an artifact's verification on its booted
// kernel, as overviews show it.
type ArtifactVerification struct {
	State, Result, Reason string
	Programs              []api.ProgramVerification
}

// RevisionArtifact is one artifact of a revision's builds.
type RevisionArtifact struct {
	ID        int64
	BuildID   int64
	KernelID  int64
	State     string
	Status    string
	Error     string
	PerKernel bool // of a per-kernel build
	// Report is the relocation report's JSON (nil when there is none yet).
	Report json.RawMessage
	// Verification is the verification on the artifact's booted kernel
	// (nil when there is none).
	Verification *ArtifactVerification
}

// RevisionID resolves a program's revision digest (in full) to its row id.
func (d *DB) RevisionID(ctx context.Context, program, digest string) (int64, error) {
	var id int64
	err := d.db.QueryRowContext(ctx, `SELECT r.id FROM revisions r JOIN programs p ON p.id = r.program_id
		WHERE p.name = ? AND r.digest = ?`, program, digest).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("revision %.12s of %s: %w", digest, program, notFound(err))
	}
	return id, nil
}

// RevisionArtifacts lists the artifacts of a revision's builds, by build
// then kernel, with their verifications.
func (d *DB) RevisionArtifacts(ctx context.Context, revisionID int64) ([]RevisionArtifact, error) {
	return queryList(ctx, d.db, "artifacts of revision", `SELECT a.id, a.build_id, a.kernel_id, a.state, a.status,
			a.error, a.report, `+perKernelBuild+`, v.state, v.result, v.reason, v.programs
		FROM builds b JOIN artifacts a ON a.build_id = b.id LEFT JOIN verifications v ON v.artifact_id = a.id
		WHERE b.revision_id = ? ORDER BY a.build_id, a.kernel_id, a.id`, []any{revisionID},
		func(row rowScanner) (RevisionArtifact, error) {
			var (
				a                     RevisionArtifact
				report                sql.NullString
				perKernel             int
				vstate, vres, vreason sql.NullString
				vprogs                sql.NullString
			)
			if err := row.Scan(&a.ID, &a.BuildID, &a.KernelID, &a.State, &a.Status, &a.Error, &report, &perKernel,
				&vstate, &vres, &vreason, &vprogs); err != nil {
				return a, err
			}
			a.PerKernel = perKernel != 0
			if report.Valid && report.String != "" {
				a.Report = json.RawMessage(report.String)
			}
			if vstate.Valid {
				a.Verification = &ArtifactVerification{State: vstate.String, Result: vres.String, Reason: vreason.String}
				if err := json.Unmarshal([]byte(vprogs.String), &a.Verification.Programs); err != nil {
					return a, fmt.Errorf("artifact %d verification: %w", a.ID, err)
				}
			}
			return a, nil
		})
}

// BuildTally counts a build's artifacts by outcome.
func (d *DB) BuildTally(ctx context.Context, buildID int64) (Tally, error) {
	var c Tally
	rows, err := d.db.QueryContext(ctx, `SELECT state, status, COUNT(*) FROM artifacts WHERE build_id = ?
		GROUP BY state, status`, buildID)
	if err != nil {
		return c, fmt.Errorf("artifacts of build %d: %w", buildID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var state, status string
		var n int
		if err := rows.Scan(&state, &status, &n); err != nil {
			return c, fmt.Errorf("artifacts of build %d: %w", buildID, err)
		}
		c.Add(state, status, n)
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("artifacts of build %d: %w", buildID, err)
	}
	return c, nil
}

// RevisionPending counts the unfinished builds and relocations of a
// revision. A build that succeeded less than grace ago with no artifacts
// yet, for an arch the archive has kernels of, counts too: its relocations
// are being queued.
func (d *DB) RevisionPending(ctx context.Context, revisionID int64, grace time.Duration) (int, error) {
	var builds, arts, queueing int
	err := d.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM builds WHERE revision_id = ? AND state IN ('queued', 'running')),
		(SELECT COUNT(*) FROM builds b JOIN artifacts a ON a.build_id = b.id
			WHERE b.revision_id = ? AND a.state IN ('queued', 'running')),
		(SELECT COUNT(*) FROM builds b WHERE b.revision_id = ? AND b.state = 'succeeded' AND b.finished_at > ?
			AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.build_id = b.id)
			AND EXISTS (SELECT 1 FROM kernels k WHERE k.arch = b.arch))`,
		revisionID, revisionID, revisionID, time.Now().UTC().Add(-grace)).Scan(&builds, &arts, &queueing)
	if err != nil {
		return 0, fmt.Errorf("pending work of revision %d: %w", revisionID, err)
	}
	return builds + arts + queueing, nil
}

// LatestTallyByKernel counts, for each kernel (by row id), the artifacts
// of every program's latest revision by outcome. Kernels without any are
// absent.
func (d *DB) LatestTallyByKernel(ctx context.Context) (map[int64]Tally, error) {
	// One ordered pass over the kernel-first artifact index: the unary +
	// keeps SQLite from driving the scan by build (and sorting tens of
	// thousands of rows to group them); it is plain arithmetic elsewhere.
	rows, err := d.db.QueryContext(ctx, `SELECT a.kernel_id, a.state, a.status, COUNT(*) FROM artifacts a
		WHERE +a.build_id IN (SELECT b.id FROM (`+latestRevisions+`) l JOIN builds b ON b.revision_id = l.rid)
		GROUP BY a.kernel_id, a.state, a.status`)
	if err != nil {
		return nil, fmt.Errorf("count artifacts by kernel: %w", err)
	}
	defer rows.Close()
	out := map[int64]Tally{}
	for rows.Next() {
		var (
			id            int64
			state, status string
			n             int
		)
		if err := rows.Scan(&id, &state, &status, &n); err != nil {
			return nil, fmt.Errorf("count artifacts by kernel: %w", err)
		}
		t := out[id]
		t.Add(state, status, n)
		out[id] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count artifacts by kernel: %w", err)
	}
	return out, nil
}

// KernelArtifact is a program's latest revision relocated for one kernel.
type KernelArtifact struct {
	ArtifactID int64
	Program    string
	Revision   string
	BuildID    int64
	State      string
	Status     string
	Error      string
}

// KernelArtifacts lists, for one kernel (by row id), the artifacts of
// every program's latest revision, by program name then newest first.
func (d *DB) KernelArtifacts(ctx context.Context, kernelID int64) ([]KernelArtifact, error) {
	return queryList(ctx, d.db, "artifacts of kernel", `SELECT a.id, p.name, r.digest, b.id, a.state, a.status, a.error
		FROM (`+latestRevisions+`) l JOIN programs p ON p.id = l.pid JOIN revisions r ON r.id = l.rid
		JOIN builds b ON b.revision_id = r.id JOIN artifacts a ON a.build_id = b.id
		WHERE a.kernel_id = ? ORDER BY p.name, a.id DESC`, []any{kernelID},
		func(row rowScanner) (KernelArtifact, error) {
			var k KernelArtifact
			err := row.Scan(&k.ArtifactID, &k.Program, &k.Revision, &k.BuildID, &k.State, &k.Status, &k.Error)
			return k, err
		})
}
