package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// desiredSource is what computing a desired state reads. The DB reads each
// piece when asked; a DesiredView reads the hosts and assignments once and
// shares kernel and revision lookups between every host it answers.
type desiredSource interface {
	host(ctx context.Context, name string) (api.Host, error)
	assignments(ctx context.Context) ([]api.Assignment, error)
	archiveKernel(ctx context.Context, kid string) (Kernel, error)
	pick(ctx context.Context, a api.Assignment, k Kernel) (picked, error)
}

// picked is the revision chosen for one assignment on one kernel, or why
// there is none yet.
type picked struct {
	revision   string
	artifactID int64
	pending    string
}

// DesiredState computes what a host should run: for every assignment whose
// selector matches the host's labels (the newest assignment wins when
// several name the same program), the pinned revision or else the latest
// revision of the program with a done artifact for the host's kernel.
// Programs with no such artifact yet are listed with Pending set and no
// revision. Version is a digest of the content, so that it is stable
// across server restarts and changes exactly when the content does.
func (d *DB) DesiredState(ctx context.Context, host string) (api.DesiredState, error) {
	return desiredState(ctx, dbSource{d}, host)
}

func desiredState(ctx context.Context, src desiredSource, host string) (api.DesiredState, error) {
	ds := api.DesiredState{Host: host, Programs: []api.DesiredProgram{}}
	h, err := src.host(ctx, host)
	if err != nil {
		return ds, err
	}
	as, err := src.assignments(ctx)
	if err != nil {
		return ds, err
	}
	byProgram := Effective(as, h.Labels)
	var k Kernel
	kernelKnown := false
	if len(byProgram) > 0 {
		switch k, err = src.archiveKernel(ctx, h.Kernel); {
		case err == nil:
			kernelKnown = true
		case !errors.Is(err, ErrNotFound):
			return ds, err
		}
	}
	for _, a := range byProgram {
		p := api.DesiredProgram{Program: a.Program, Assignment: a.ID, Options: a.Options, Pinned: a.Revision != ""}
		if len(a.Exports) > 0 {
			p.Exports = a.Exports
		}
		if !kernelKnown {
			p.Pending = fmt.Sprintf("kernel %s is not in the archive: import it (bpfarm kernels import --host on the host, "+
				"or an agent with upload_btf on a server run with --agent-btf-upload)", h.Kernel)
			ds.Programs = append(ds.Programs, p)
			continue
		}
		p.Kernel = k.KID
		if !k.ServedTo(host, false) {
			p.Pending = fmt.Sprintf("kernel %s is unverified (its BTF was uploaded by host %s): waiting for an admin "+
				"to approve it (bpfarm kernels approve %s)", k.KID, k.SourceHost, k.KID)
			ds.Programs = append(ds.Programs, p)
			continue
		}
		pk, err := src.pick(ctx, a, k)
		if err != nil {
			return ds, err
		}
		p.Revision, p.ArtifactID, p.Pending = pk.revision, pk.artifactID, pk.pending
		ds.Programs = append(ds.Programs, p)
	}
	sort.Slice(ds.Programs, func(i, j int) bool { return ds.Programs[i].Program < ds.Programs[j].Program })
	ds.Version = desiredVersion(ds.Programs)
	return ds, nil
}

// dbSource reads every piece of a desired state from the database.
type dbSource struct{ d *DB }

func (s dbSource) host(ctx context.Context, name string) (api.Host, error) {
	return s.d.Host(ctx, name)
}
func (s dbSource) assignments(ctx context.Context) ([]api.Assignment, error) {
	return s.d.Assignments(ctx, "")
}
func (s dbSource) archiveKernel(ctx context.Context, kid string) (Kernel, error) {
	return s.d.ArchiveKernel(ctx, kid)
}
func (s dbSource) pick(ctx context.Context, a api.Assignment, k Kernel) (picked, error) {
	return s.d.pickRevision(ctx, a, k)
}

// pickRevision chooses a's revision and artifact for kernel k, or says why
// there is none.
func (d *DB) pickRevision(ctx context.Context, a api.Assignment, k Kernel) (picked, error) {
	var p picked
	q := `SELECT r.digest, a.id FROM artifacts a JOIN builds b ON b.id = a.build_id
		JOIN revisions r ON r.id = b.revision_id JOIN programs p ON p.id = r.program_id
		WHERE p.name = ? AND a.kernel_id = ? AND a.state = 'done'`
	args := []any{a.Program, k.ID}
	if a.Revision != "" {
		q += ` AND r.digest = ?`
		args = append(args, a.Revision)
	}
	q += ` ORDER BY r.created_at DESC, r.id DESC, a.id DESC LIMIT 1`
	err := d.db.QueryRowContext(ctx, q, args...).Scan(&p.revision, &p.artifactID)
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("desired revision of %s for %s: %w", a.Program, k.KID, err)
	}
	// Why not: the newest artifact of the wanted revision(s), if any.
	what := "any revision"
	if a.Revision != "" {
		what = "revision " + short(a.Revision)
	}
	as, err := d.Artifacts(ctx, ArtifactFilter{Program: a.Program, Revision: a.Revision, Kernel: k.KID, Limit: 1})
	if err != nil {
		return p, err
	}
	if len(as) == 0 {
		p.pending = fmt.Sprintf("no artifact of %s (%s) for kernel %s: no succeeded build of it was relocated for this kernel",
			a.Program, what, k.KID)
		return p, nil
	}
	p.pending = fmt.Sprintf("the artifact of %s (%s) for kernel %s is %s", a.Program, what, k.KID, as[0].State)
	if as[0].Error != "" {
		p.pending += ": " + as[0].Error
	}
	return p, nil
}

// desiredVersion digests the desired programs into a non-zero number that
// fits a JSON number exactly (52 bits).
func desiredVersion(ps []api.DesiredProgram) uint64 {
	b, _ := json.Marshal(ps) // maps marshal with sorted keys: deterministic
	h := sha256.Sum256(b)
	v := binary.BigEndian.Uint64(h[:8]) >> 12
	if v == 0 {
		v = 1
	}
	return v
}

// desiredViewLoad bounds the view's shared reads, which outlive the
// request that happened to start them.
const desiredViewLoad = 30 * time.Second

// DesiredView answers DesiredState for many hosts from one reading of the
// database: the hosts and the assignments are read once (when first
// needed), and each archive kernel and each (assignment, kernel) revision
// pick once, however many hosts share them. A view is a snapshot: it does
// not see changes made after its reads, so callers take a new one when a
// change is announced (TopicHosts, TopicBuilds). Safe for concurrent use.
//
// A view turns the thundering herd of long polls that one assignment change
// wakes (thousands of agents at once) into a handful of queries.
type DesiredView struct {
	d *DB

	loadOnce    sync.Once
	loadErr     error
	hosts       map[string]api.Host
	assignments []api.Assignment

	mu      sync.Mutex
	kernels map[string]*memo[Kernel]
	picks   map[pickKey]*memo[picked]
}

type pickKey struct {
	program, revision string
	kernel            int64
}

// memo is one shared lookup: the first caller runs it, the others wait.
type memo[T any] struct {
	done chan struct{}
	v    T
	err  error
}

// DesiredView returns an empty view; it reads on its first use.
func (d *DB) DesiredView() *DesiredView {
	return &DesiredView{d: d, kernels: map[string]*memo[Kernel]{}, picks: map[pickKey]*memo[picked]{}}
}

// DesiredState computes a host's desired state as DB.DesiredState does,
// from the view's snapshot.
func (v *DesiredView) DesiredState(ctx context.Context, host string) (api.DesiredState, error) {
	return desiredState(ctx, viewSource{v}, host)
}

// load reads every host and the assignments once, detached from the
// caller's cancellation (other callers share the result).
func (v *DesiredView) load(ctx context.Context) error {
	v.loadOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), desiredViewLoad)
		defer cancel()
		hosts, err := queryList(ctx, v.d.db, "list hosts", `SELECT `+hostColumns+` FROM hosts`, nil, scanHost)
		if err != nil {
			v.loadErr = err
			return
		}
		v.hosts = make(map[string]api.Host, len(hosts))
		for _, h := range hosts {
			v.hosts[h.Name] = h
		}
		v.assignments, v.loadErr = v.d.Assignments(ctx, "")
	})
	return v.loadErr
}

// shared runs fn once per key among concurrent and later callers; a failed
// lookup is forgotten, so that the next caller tries again.
func shared[K comparable, T any](ctx context.Context, mu *sync.Mutex, m map[K]*memo[T], key K,
	fn func(context.Context) (T, error)) (T, error) {
	mu.Lock()
	e, ok := m[key]
	if !ok {
		e = &memo[T]{done: make(chan struct{})}
		m[key] = e
	}
	mu.Unlock()
	if ok {
		select {
		case <-e.done:
			return e.v, e.err
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), desiredViewLoad)
	defer cancel()
	e.v, e.err = fn(lctx)
	if e.err != nil && !errors.Is(e.err, ErrNotFound) {
		mu.Lock()
		delete(m, key)
		mu.Unlock()
	}
	close(e.done)
	return e.v, e.err
}

// viewSource reads a desired state's pieces through a DesiredView.
type viewSource struct{ v *DesiredView }

func (s viewSource) host(ctx context.Context, name string) (api.Host, error) {
	if err := s.v.load(ctx); err != nil {
		return api.Host{}, err
	}
	h, ok := s.v.hosts[name]
	if !ok {
		// Registered after the snapshot: read it on its own.
		return s.v.d.Host(ctx, name)
	}
	if k, err := s.archiveKernel(ctx, h.Kernel); err == nil {
		h.ArchiveKernel = k.KID
	} else if !errors.Is(err, ErrNotFound) {
		return h, err
	}
	return h, nil
}

func (s viewSource) assignments(ctx context.Context) ([]api.Assignment, error) {
	if err := s.v.load(ctx); err != nil {
		return nil, err
	}
	return s.v.assignments, nil
}

func (s viewSource) archiveKernel(ctx context.Context, kid string) (Kernel, error) {
	return shared(ctx, &s.v.mu, s.v.kernels, kid, func(ctx context.Context) (Kernel, error) {
		return s.v.d.ArchiveKernel(ctx, kid)
	})
}

func (s viewSource) pick(ctx context.Context, a api.Assignment, k Kernel) (picked, error) {
	key := pickKey{program: a.Program, revision: a.Revision, kernel: k.ID}
	return shared(ctx, &s.v.mu, s.v.picks, key, func(ctx context.Context) (picked, error) {
		return s.v.d.pickRevision(ctx, a, k)
	})
}
