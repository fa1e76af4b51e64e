package client

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
)

// The hosts and assignments API (/api/v1/hosts, /api/v1/assignments): the
// daemon registers, long-polls its desired state and reports; publishers
// assign programs to hosts.

// send sends in (JSON, when not nil) and decodes the answer into out (when
// not nil).
func (c *Client) send(ctx context.Context, method, path string, q url.Values, in, out any) error {
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
	resp, err := c.Do(ctx, method, path, q, body, ct, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return decode(resp, out)
}

// Register registers (or updates) a host.
func (c *Client) Register(ctx context.Context, reg api.HostRegistration) (*api.Host, error) {
	var host api.Host
	if err := c.send(ctx, http.MethodPost, "/api/v1/hosts/register", nil, reg, &host); err != nil {
		return nil, fmt.Errorf("register host %s: %w", reg.Name, err)
	}
	return &host, nil
}

// Report sends a host's per-program states.
func (c *Client) Report(ctx context.Context, name string, rep api.HostReport) error {
	if err := c.send(ctx, http.MethodPost, "/api/v1/hosts/"+url.PathEscape(name)+"/report", nil, rep, nil); err != nil {
		return fmt.Errorf("report of host %s: %w", name, err)
	}
	return nil
}

// Desired returns what a host should run. With version not zero and wait
// positive, the server holds the request until the desired state differs
// from version or wait passes.
func (c *Client) Desired(ctx context.Context, name string, version uint64, wait time.Duration) (*api.DesiredState, error) {
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
	if err := c.send(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(name)+"/desired", q, nil, &ds); err != nil {
		return nil, fmt.Errorf("desired state of host %s: %w", name, err)
	}
	return &ds, nil
}

// Hosts lists registered hosts.
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	var hs []api.Host
	if err := c.send(ctx, http.MethodGet, "/api/v1/hosts", nil, nil, &hs); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return hs, nil
}

// Host returns one host.
func (c *Client) Host(ctx context.Context, name string) (*api.Host, error) {
	var host api.Host
	if err := c.send(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(name), nil, nil, &host); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	return &host, nil
}

// Assign creates an assignment (publisher).
func (c *Client) Assign(ctx context.Context, req api.AssignmentRequest) (*api.Assignment, error) {
	var a api.Assignment
	if err := c.send(ctx, http.MethodPost, "/api/v1/assignments", nil, req, &a); err != nil {
		return nil, fmt.Errorf("assign %s: %w", req.Program, err)
	}
	return &a, nil
}

// Assignments lists assignments, of one program when program is not empty.
func (c *Client) Assignments(ctx context.Context, program string) ([]api.Assignment, error) {
	q := url.Values{}
	if program != "" {
		q.Set("program", program)
	}
	var as []api.Assignment
	if err := c.send(ctx, http.MethodGet, "/api/v1/assignments", q, nil, &as); err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	return as, nil
}

// Unassign removes an assignment (publisher).
func (c *Client) Unassign(ctx context.Context, id int64) error {
	if err := c.send(ctx, http.MethodDelete, "/api/v1/assignments/"+strconv.FormatInt(id, 10), nil, nil, nil); err != nil {
		return fmt.Errorf("unassign %d: %w", id, err)
	}
	return nil
}

// Verifications lists the verifications on real kernels of a program's
// artifacts.
func (c *Client) Verifications(ctx context.Context, program string) ([]api.Verification, error) {
	vs := []api.Verification{}
	if err := c.getJSON(ctx, "/api/v1/verifications", url.Values{"program": {program}}, &vs); err != nil {
		return nil, fmt.Errorf("verifications of %s: %w", program, err)
	}
	return vs, nil
}
