// Package client is bpfarm's thin client library: it talks to a bpfarm
// server's REST API. It needs no cgo and never imports the server, so that
// any Go program — and bpfarm-agent, a static binary — can use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
)

// DefaultServer is the server URL used when none is configured.
const DefaultServer = "http://127.0.0.1:8080"

// Client is a bpfarm API client. The zero value is not usable: use New.
type Client struct {
	servers *servers
	token   string
	// http sends small calls, bounded by CallTimeout in total; stream
	// sends uploads, bounded by their progress (see upload).
	http, stream *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// IdleTimeout bounds an upload (a request body of 1 MiB or more, or of
	// unknown size): it fails with *StalledError when no byte was sent or
	// received for that long, however long the whole transfer takes.
	// Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// AnswerTimeout bounds the server's work on an upload: the time from
	// its last byte to the answer. Zero means DefaultAnswerTimeout.
	AnswerTimeout time.Duration
}

// New returns a client for the server at serverURL (DefaultServer when
// empty), authenticating with token (none when empty). serverURL may list
// several servers, comma separated — replicas of one farm: the client
// sticks to the one that answers, and fails over to the next when it
// cannot be reached or answers 5xx (see Do).
func New(serverURL, token string) (*Client, error) {
	s, err := parseServers(serverURL)
	if err != nil {
		return nil, err
	}
	return &Client{
		servers:   s,
		token:     token,
		http:      &http.Client{Timeout: DefaultCallTimeout},
		stream:    &http.Client{},
		UserAgent: "bpfarm-client",
	}, nil
}

// Server returns the base URL of the server in use.
func (c *Client) Server() string { return c.servers.current().base.String() }

// Servers returns every server's base URL, in the order given.
func (c *Client) Servers() []string {
	out := make([]string, len(c.servers.list))
	for i, r := range c.servers.list {
		out[i] = r.base.String()
	}
	return out
}

func (r *replica) url(path string, q url.Values) string {
	u := *r.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String()
}

// Do sends a request to path (e.g. "/api/v1/programs") and returns the
// response for 2xx and 304 answers; other answers become *APIError. A call
// is bounded by DefaultCallTimeout in total; an upload (body of 1 MiB or
// more, or of unknown size) by its progress instead (IdleTimeout,
// AnswerTimeout).
//
// With several servers, a call that gets no answer, or a 5xx, is sent to
// the next server (one whose body can be sent again: nil, a buffer, a
// seekable reader, or one the failed attempt did not read), each server at
// most once; a server that failed is kept behind the others for a backoff
// (FailoverBackoffMin doubling up to FailoverBackoffMax). The error of a
// call no server answered lists every attempt's and matches each of them.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string, hdr http.Header) (*http.Response, error) {
	upload := isUpload(body)
	rw, body := newRewindable(body)
	var (
		errs  []error
		hosts []string
	)
	for i, r := range c.servers.order() {
		if i > 0 {
			var ok bool
			if body, ok = rw.rewind(); !ok {
				break
			}
		}
		resp, err := c.do(ctx, r, method, path, q, body, upload, contentType, hdr)
		if err == nil {
			c.servers.ok(r)
			return resp, nil
		}
		if ctx.Err() != nil || !shouldFailover(err) {
			if !shouldFailover(err) {
				c.servers.ok(r) // it answered
			}
			return nil, err
		}
		c.servers.failed(r)
		errs = append(errs, err)
		hosts = append(hosts, r.base.Host)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, &failoverError{errs: errs, hosts: hosts}
}

// do sends one request to server r.
func (c *Client) do(ctx context.Context, r *replica, method, path string, q url.Values, body io.Reader, upload bool, contentType string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.url(path, q), body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.UserAgent)
	var resp *http.Response
	if upload {
		resp, err = c.upload(ctx, req)
	} else {
		resp, err = c.http.Do(req)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, r.base.Host, unavailable(unwrapURLError(err)))
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
		if e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
	}
	return nil, &APIError{Status: resp.StatusCode, Message: e.Error}
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	resp, err := c.Do(ctx, http.MethodGet, path, q, nil, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decode(resp, v)
}

// decode decodes a JSON answer. A body cut short is ErrUnavailable; an
// answer that is not the JSON expected is not.
func decode(resp *http.Response, v any) error {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s answer: %w", resp.Request.URL.Path, unavailable(err))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s answer: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// PushOptions are a push's build options.
type PushOptions struct {
	Arches []string
	Flags  []string
	// PerKernel compiles against each kernel's own vmlinux.h (sources that
	// are not CO-RE).
	PerKernel bool
	// Headers names the libbpf header set ("" is the server's default).
	Headers string
}

// Push uploads a bundle as a revision of program.
func (c *Client) Push(ctx context.Context, program string, b *bpfsrc.Bundle, opt PushOptions) (*api.PushResult, error) {
	var buf bytes.Buffer
	if err := b.WriteTarGz(&buf); err != nil {
		return nil, fmt.Errorf("pack bundle: %w", err)
	}
	q := url.Values{"entry": {b.Entry}}
	if len(opt.Arches) > 0 {
		q["arch"] = opt.Arches
	}
	if len(opt.Flags) > 0 {
		q["flag"] = opt.Flags
	}
	if opt.PerKernel {
		q.Set("per_kernel", "true")
	}
	if opt.Headers != "" {
		q.Set("headers", opt.Headers)
	}
	resp, err := c.Do(ctx, http.MethodPost, "/api/v1/programs/"+url.PathEscape(program)+"/revisions", q, &buf, "application/gzip", nil)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", program, err)
	}
	defer resp.Body.Close()
	var res api.PushResult
	return &res, decode(resp, &res)
}

// Build returns a build. With wait > 0 the server holds the request until
// the build is done or wait passes.
func (c *Client) Build(ctx context.Context, id int64, wait time.Duration) (*api.Build, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var b api.Build
	if err := c.getJSON(ctx, "/api/v1/builds/"+strconv.FormatInt(id, 10), q, &b); err != nil {
		return nil, fmt.Errorf("build %d: %w", id, err)
	}
	return &b, nil
}

// WaitBuild polls until a build is done, calling progress (if not nil)
// on every state seen.
func (c *Client) WaitBuild(ctx context.Context, id int64, progress func(*api.Build)) (*api.Build, error) {
	backoff := time.Second
	for {
		b, err := c.Build(ctx, id, 25*time.Second)
		if err != nil {
			if !IsTransient(err) || ctx.Err() != nil {
				return nil, err
			}
			// Transient (server restarting): retry with backoff.
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = time.Second
		if progress != nil {
			progress(b)
		}
		if b.Done() {
			return b, nil
		}
	}
}

// Builds lists builds, optionally of one program.
func (c *Client) Builds(ctx context.Context, program string) ([]api.Build, error) {
	q := url.Values{}
	if program != "" {
		q.Set("program", program)
	}
	var bs []api.Build
	return bs, c.getJSON(ctx, "/api/v1/builds", q, &bs)
}

// Programs lists programs.
func (c *Client) Programs(ctx context.Context) ([]api.Program, error) {
	var ps []api.Program
	return ps, c.getJSON(ctx, "/api/v1/programs", nil, &ps)
}

// Program returns one program with its revisions and builds.
func (c *Client) Program(ctx context.Context, name string) (*api.Program, error) {
	var p api.Program
	if err := c.getJSON(ctx, "/api/v1/programs/"+url.PathEscape(name), nil, &p); err != nil {
		return nil, fmt.Errorf("program %s: %w", name, err)
	}
	return &p, nil
}

// BuildLog returns a build's log text.
func (c *Client) BuildLog(ctx context.Context, id int64) (string, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/api/v1/builds/"+strconv.FormatInt(id, 10)+"/log", nil, nil, "", nil)
	if err != nil {
		return "", fmt.Errorf("build %d log: %w", id, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("build %d log: %w", id, unavailable(err))
	}
	return string(b), nil
}

// Whoami describes the client's token.
func (c *Client) Whoami(ctx context.Context) (*api.Whoami, error) {
	var w api.Whoami
	return &w, c.getJSON(ctx, "/api/v1/whoami", nil, &w)
}

// SigningKey returns the server's manifest signing key.
func (c *Client) SigningKey(ctx context.Context) (*api.SigningKey, error) {
	var k api.SigningKey
	return &k, c.getJSON(ctx, "/api/v1/signing-key", nil, &k)
}

// Tokens lists tokens (admin).
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var ts []api.Token
	return ts, c.getJSON(ctx, "/api/v1/tokens", nil, &ts)
}

// CreateToken creates a token (admin) and returns it with its secret.
func (c *Client) CreateToken(ctx context.Context, name, role string) (*api.TokenCreated, error) {
	body, _ := json.Marshal(api.TokenRequest{Name: name, Role: role})
	resp, err := c.Do(ctx, http.MethodPost, "/api/v1/tokens", nil, bytes.NewReader(body), "application/json", nil)
	if err != nil {
		return nil, fmt.Errorf("create token %s: %w", name, err)
	}
	defer resp.Body.Close()
	var t api.TokenCreated
	return &t, decode(resp, &t)
}

// RevokeToken revokes a token by name (admin).
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	resp, err := c.Do(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(name), nil, nil, "", nil)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	return resp.Body.Close()
}
