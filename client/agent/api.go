package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/client"
)

// HostsAPI is the client of the server's hosts and assignments API
// (/api/v1/hosts, /api/v1/assignments), over a client.Client.
type HostsAPI struct {
	C *client.Client
}

func (h HostsAPI) send(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var (
		body io.Reader
		ct   string
	)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := h.C.Do(ctx, method, path, q, body, ct, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// Register registers (or updates) a host.
func (h HostsAPI) Register(ctx context.Context, reg api.HostRegistration) (*api.Host, error) {
	var host api.Host
	if err := h.send(ctx, http.MethodPost, "/api/v1/hosts/register", nil, reg, &host); err != nil {
		return nil, fmt.Errorf("register host %s: %w", reg.Name, err)
	}
	return &host, nil
}

// Report sends a host's per-program states.
func (h HostsAPI) Report(ctx context.Context, name string, rep api.HostReport) error {
	if err := h.send(ctx, http.MethodPost, "/api/v1/hosts/"+url.PathEscape(name)+"/report", nil, rep, nil); err != nil {
		return fmt.Errorf("report of host %s: %w", name, err)
	}
	return nil
}

// Desired returns what a host should run. With version not zero and wait
// positive, the server holds the request until the desired state differs
// from version or wait passes.
func (h HostsAPI) Desired(ctx context.Context, name string, version uint64, wait time.Duration) (*api.DesiredState, error) {
	q := url.Values{}
	if version != 0 {
		q.Set("version", strconv.FormatUint(version, 10))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait+30*time.Second)
		defer cancel()
	}
	var ds api.DesiredState
	if err := h.send(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(name)+"/desired", q, nil, &ds); err != nil {
		return nil, fmt.Errorf("desired state of host %s: %w", name, err)
	}
	return &ds, nil
}

// Hosts lists registered hosts.
func (h HostsAPI) Hosts(ctx context.Context) ([]api.Host, error) {
	var hs []api.Host
	if err := h.send(ctx, http.MethodGet, "/api/v1/hosts", nil, nil, &hs); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return hs, nil
}

// Host returns one host.
func (h HostsAPI) Host(ctx context.Context, name string) (*api.Host, error) {
	var host api.Host
	if err := h.send(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(name), nil, nil, &host); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	return &host, nil
}

// Assign creates an assignment (publisher).
func (h HostsAPI) Assign(ctx context.Context, req api.AssignmentRequest) (*api.Assignment, error) {
	var a api.Assignment
	if err := h.send(ctx, http.MethodPost, "/api/v1/assignments", nil, req, &a); err != nil {
		return nil, fmt.Errorf("assign %s: %w", req.Program, err)
	}
	return &a, nil
}

// Assignments lists assignments, of one program when program is not empty.
func (h HostsAPI) Assignments(ctx context.Context, program string) ([]api.Assignment, error) {
	q := url.Values{}
	if program != "" {
		q.Set("program", program)
	}
	var as []api.Assignment
	if err := h.send(ctx, http.MethodGet, "/api/v1/assignments", q, nil, &as); err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	return as, nil
}

// Unassign removes an assignment (publisher).
func (h HostsAPI) Unassign(ctx context.Context, id int64) error {
	if err := h.send(ctx, http.MethodDelete, "/api/v1/assignments/"+strconv.FormatInt(id, 10), nil, nil, nil); err != nil {
		return fmt.Errorf("unassign %d: %w", id, err)
	}
	return nil
}
