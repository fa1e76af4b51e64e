package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bpfarm/bpfarm/api"
)

// Registered reports what a host registration changed.
type Registered struct {
	Host api.Host
	// Created is set on the first registration of the name.
	Created bool
	// Changed is set when something the desired state depends on (kernel,
	// labels) differs from the previous registration.
	Changed bool
	// PreviousHostID is the host id the name was registered with before,
	// when it differs (another machine took the name, or it was
	// reinstalled).
	PreviousHostID string
}

const hostColumns = `id, name, host_id, hostname, kernel, build, labels, has_btf, agent_version, first_seen, last_seen,
	reported_at, state, registered_by,
	COALESCE((SELECT t.name FROM tokens t WHERE t.host = hosts.name AND t.host != '' AND t.revoked_at IS NULL), '')`

func scanHost(row rowScanner) (api.Host, error) {
	var (
		h             api.Host
		labels, state string
		reported      sql.NullTime
	)
	err := row.Scan(&h.ID, &h.Name, &h.HostID, &h.Hostname, &h.Kernel, &h.Build, &labels, &h.HasBTF, &h.AgentVersion,
		&h.FirstSeen, &h.LastSeen, &reported, &state, &h.Token, &h.Enrolled)
	if err != nil {
		return h, notFound(err)
	}
	h.FirstSeen, h.LastSeen, h.ReportedAt = h.FirstSeen.UTC(), h.LastSeen.UTC(), nullTime(reported)
	if err := json.Unmarshal([]byte(labels), &h.Labels); err != nil {
		return h, fmt.Errorf("host %s labels: %w", h.Name, err)
	}
	if err := json.Unmarshal([]byte(state), &h.Programs); err != nil {
		return h, fmt.Errorf("host %s state: %w", h.Name, err)
	}
	if h.Labels == nil {
		h.Labels = map[string]string{}
	}
	if h.Programs == nil {
		h.Programs = []api.HostProgram{}
	}
	return h, nil
}

// RegisterHost records a host, or updates its identity, labels and agent
// version when the name is already registered (registration is idempotent
// by name). by names the token that registered it.
func (d *DB) RegisterHost(ctx context.Context, reg api.HostRegistration, by string) (Registered, error) {
	var out Registered
	labels, err := json.Marshal(nonNilMap(reg.Labels))
	if err != nil {
		return out, fmt.Errorf("register host %s: %w", reg.Name, err)
	}
	err = d.tx(ctx, func(tx *sqlTx) error {
		out = Registered{}
		old, err := scanHost(tx.QueryRowContext(ctx, `SELECT `+hostColumns+` FROM hosts WHERE name = ?`, reg.Name))
		t := now()
		switch {
		case errors.Is(err, ErrNotFound):
			out.Created, out.Changed = true, true
			_, err = tx.ExecContext(ctx, `INSERT INTO hosts (name, host_id, hostname, kernel, build, labels, has_btf,
				agent_version, registered_by, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				reg.Name, reg.HostID, reg.Hostname, reg.Kernel, reg.Build, string(labels), reg.HasBTF, reg.AgentVersion,
				by, t, t)
			return err
		case err != nil:
			return err
		}
		out.Changed = old.Kernel != reg.Kernel || !equalLabels(old.Labels, reg.Labels)
		if old.HostID != "" && old.HostID != reg.HostID {
			out.PreviousHostID = old.HostID
		}
		_, err = tx.ExecContext(ctx, `UPDATE hosts SET host_id = ?, hostname = ?, kernel = ?, build = ?, labels = ?,
			has_btf = ?, agent_version = ?, registered_by = ?, last_seen = ? WHERE id = ?`,
			reg.HostID, reg.Hostname, reg.Kernel, reg.Build, string(labels), reg.HasBTF, reg.AgentVersion, by, t, old.ID)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("register host %s: %w", reg.Name, err)
	}
	out.Host, err = d.Host(ctx, reg.Name)
	return out, err
}

// ReportHost replaces a host's reported program states and marks it seen.
func (d *DB) ReportHost(ctx context.Context, name string, programs []api.HostProgram) error {
	state, err := json.Marshal(nonNil(programs))
	if err != nil {
		return fmt.Errorf("report of host %s: %w", name, err)
	}
	t := now()
	res, err := d.db.ExecContext(ctx, `UPDATE hosts SET state = ?, reported_at = ?, last_seen = ? WHERE name = ?`,
		string(state), t, t, name)
	if err != nil {
		return fmt.Errorf("report of host %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("host %s: %w (register it first)", name, ErrNotFound)
	}
	return nil
}

// TouchHost marks a host seen now.
func (d *DB) TouchHost(ctx context.Context, name string) error {
	res, err := d.db.ExecContext(ctx, `UPDATE hosts SET last_seen = ? WHERE name = ?`, now(), name)
	if err != nil {
		return fmt.Errorf("touch host %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("host %s: %w (register it first)", name, ErrNotFound)
	}
	return nil
}

// Host returns a registered host by name, with the archive kernel its
// artifacts are relocated for.
func (d *DB) Host(ctx context.Context, name string) (api.Host, error) {
	h, err := scanHost(d.db.QueryRowContext(ctx, `SELECT `+hostColumns+` FROM hosts WHERE name = ?`, name))
	if err != nil {
		return h, fmt.Errorf("host %s: %w", name, err)
	}
	k, err := d.ArchiveKernel(ctx, h.Kernel)
	switch {
	case err == nil:
		h.ArchiveKernel = k.KID
	case !errors.Is(err, ErrNotFound):
		return h, err
	}
	return h, nil
}

// Hosts lists registered hosts by name.
func (d *DB) Hosts(ctx context.Context) ([]api.Host, error) {
	out, err := queryList(ctx, d.db, "list hosts", `SELECT `+hostColumns+` FROM hosts ORDER BY name`, nil, scanHost)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if k, err := d.ArchiveKernel(ctx, out[i].Kernel); err == nil {
			out[i].ArchiveKernel = k.KID
		}
	}
	return out, nil
}

// ArchiveKernel maps a host's kernel id onto the archive the way artifact
// resolution does: the exact id, else a kernel of the same arch and
// release under another distro entry. It returns ErrNotFound when there
// is none.
func (d *DB) ArchiveKernel(ctx context.Context, kid string) (Kernel, error) {
	k, err := d.Kernel(ctx, kid)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return k, err
	}
	parts := strings.Split(kid, "/")
	if len(parts) != 4 {
		return k, fmt.Errorf("kernel %s: %w", kid, ErrNotFound)
	}
	k, err = scanKernel(d.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE arch = ? AND release = ?
		ORDER BY trust = 'unverified', kid LIMIT 1`, parts[2], parts[3]))
	if err != nil {
		return k, fmt.Errorf("kernel %s: %w", kid, err)
	}
	return k, nil
}

// AddAssignment records an assignment. The program must exist; a pinned
// revision (digest or unique prefix) is resolved to its full digest.
func (d *DB) AddAssignment(ctx context.Context, req api.AssignmentRequest, by string) (api.Assignment, error) {
	var programID int64
	err := d.db.QueryRowContext(ctx, `SELECT id FROM programs WHERE name = ?`, req.Program).Scan(&programID)
	if err != nil {
		return api.Assignment{}, fmt.Errorf("program %q: %w", req.Program, notFound(err))
	}
	revision := ""
	if req.Revision != "" {
		if revision, _, _, err = d.RevisionBlob(ctx, req.Program, req.Revision); err != nil {
			return api.Assignment{}, err
		}
	}
	selector, err := json.Marshal(nonNilMap(req.Selector))
	if err != nil {
		return api.Assignment{}, fmt.Errorf("assign %s: %w", req.Program, err)
	}
	options, err := json.Marshal(req.Options)
	if err != nil {
		return api.Assignment{}, fmt.Errorf("assign %s: %w", req.Program, err)
	}
	exports, err := json.Marshal(nonNil(req.Exports))
	if err != nil {
		return api.Assignment{}, fmt.Errorf("assign %s: %w", req.Program, err)
	}
	var id int64
	err = d.db.QueryRowContext(ctx, `INSERT INTO assignments (program_id, selector, revision, options, exports,
		created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`, programID, string(selector), revision,
		string(options), string(exports), by, now()).Scan(&id)
	if err != nil {
		return api.Assignment{}, fmt.Errorf("assign %s: %w", req.Program, err)
	}
	return d.Assignment(ctx, id)
}

const assignmentColumns = `a.id, p.name, a.selector, a.revision, a.options, a.exports, a.created_by, a.created_at`

const assignmentFrom = ` FROM assignments a JOIN programs p ON p.id = a.program_id`

func scanAssignment(row rowScanner) (api.Assignment, error) {
	var (
		a                          api.Assignment
		selector, options, exports string
	)
	if err := row.Scan(&a.ID, &a.Program, &selector, &a.Revision, &options, &exports, &a.CreatedBy,
		&a.CreatedAt); err != nil {
		return a, notFound(err)
	}
	a.CreatedAt = a.CreatedAt.UTC()
	if err := json.Unmarshal([]byte(selector), &a.Selector); err != nil {
		return a, fmt.Errorf("assignment %d selector: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(options), &a.Options); err != nil {
		return a, fmt.Errorf("assignment %d options: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(exports), &a.Exports); err != nil {
		return a, fmt.Errorf("assignment %d exports: %w", a.ID, err)
	}
	if a.Selector == nil {
		a.Selector = map[string]string{}
	}
	if a.Exports == nil {
		a.Exports = []api.Export{}
	}
	return a, nil
}

// Assignment returns one assignment.
func (d *DB) Assignment(ctx context.Context, id int64) (api.Assignment, error) {
	a, err := scanAssignment(d.db.QueryRowContext(ctx, `SELECT `+assignmentColumns+assignmentFrom+` WHERE a.id = ?`, id))
	if err != nil {
		return a, fmt.Errorf("assignment %d: %w", id, err)
	}
	return a, nil
}

// Assignments lists assignments, of one program when program is not
// empty, oldest first.
func (d *DB) Assignments(ctx context.Context, program string) ([]api.Assignment, error) {
	q := `SELECT ` + assignmentColumns + assignmentFrom
	var args []any
	if program != "" {
		q += ` WHERE p.name = ?`
		args = append(args, program)
	}
	return queryList(ctx, d.db, "list assignments", q+` ORDER BY a.id`, args, scanAssignment)
}

// DeleteAssignment removes an assignment.
func (d *DB) DeleteAssignment(ctx context.Context, id int64) error {
	res, err := d.db.ExecContext(ctx, `DELETE FROM assignments WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete assignment %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("assignment %d: %w", id, ErrNotFound)
	}
	return nil
}

// Effective returns, by program, the assignment a host with labels
// follows: the newest of as (listed by ascending id, as Assignments lists
// them) whose selector matches.
func Effective(as []api.Assignment, labels map[string]string) map[string]api.Assignment {
	byProgram := map[string]api.Assignment{}
	for _, a := range as {
		if Matches(a.Selector, labels) && a.ID >= byProgram[a.Program].ID {
			byProgram[a.Program] = a
		}
	}
	return byProgram
}

// Matches reports whether a host with labels is selected by selector:
// every pair of the selector must be among the labels; an empty selector
// selects every host.
func Matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func nonNilMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}

// HostsWithKernel counts the registered hosts running kernel kid.
func (d *DB) HostsWithKernel(ctx context.Context, kid string) (int, error) {
	var n int
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM hosts WHERE kernel = ?`, kid).Scan(&n); err != nil {
		return 0, fmt.Errorf("hosts with kernel %s: %w", kid, err)
	}
	return n, nil
}
