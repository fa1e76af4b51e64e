package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/bpfarm/bpfarm/api"
)

// EnrollHost creates the token of host name, role host, bound to the name
// (admin); it revokes the host's previous token. labels, when set, are the
// host's labels whatever its agent registers with.
func (c *Client) EnrollHost(ctx context.Context, name string, labels map[string]string) (*api.TokenCreated, error) {
	var t api.TokenCreated
	if err := c.send(ctx, http.MethodPost, "/api/v1/hosts/"+url.PathEscape(name)+"/enroll", nil,
		api.HostEnrollment{Labels: labels}, &t); err != nil {
		return nil, fmt.Errorf("enroll host %s: %w", name, err)
	}
	return &t, nil
}

// ApproveKernel trusts a kernel whose BTF a host uploaded (admin).
func (c *Client) ApproveKernel(ctx context.Context, kid string) (*api.Kernel, error) {
	var k api.Kernel
	if err := c.send(ctx, http.MethodPost, "/api/v1/kernels/"+escapeKernelID(kid)+"/approve", nil, nil, &k); err != nil {
		return nil, fmt.Errorf("approve kernel %s: %w", kid, err)
	}
	return &k, nil
}

// escapeKernelID escapes each part of a kernel id, keeping its slashes.
func escapeKernelID(kid string) string {
	parts := strings.Split(kid, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// GC runs a garbage collection on the server (admin); with dryRun it
// only counts what it would delete.
func (c *Client) GC(ctx context.Context, dryRun bool) (*api.GCReport, error) {
	var r api.GCReport
	q := url.Values{"dry_run": {strconv.FormatBool(dryRun)}}
	if err := c.send(ctx, http.MethodPost, "/api/v1/gc", q, nil, &r); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return &r, nil
}

// Quota returns a token's limits and usage (admin); an empty name is the
// caller's own token.
func (c *Client) Quota(ctx context.Context, token string) (*api.TokenQuota, error) {
	var q api.TokenQuota
	path := "/api/v1/quota"
	if token != "" {
		path = "/api/v1/tokens/" + url.PathEscape(token) + "/quota"
	}
	if err := c.getJSON(ctx, path, nil, &q); err != nil {
		return nil, fmt.Errorf("quota: %w", err)
	}
	return &q, nil
}

// SetQuota overrides a token's limits (admin): positive fields set a
// limit, negative ones restore the default, zero ones keep it.
func (c *Client) SetQuota(ctx context.Context, token string, q api.Quota) (*api.TokenQuota, error) {
	var out api.TokenQuota
	if err := c.send(ctx, http.MethodPut, "/api/v1/tokens/"+url.PathEscape(token)+"/quota", nil, q, &out); err != nil {
		return nil, fmt.Errorf("set quota of %s: %w", token, err)
	}
	return &out, nil
}
