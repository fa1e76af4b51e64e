package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
)

// ImportOptions qualify a kernel import.
type ImportOptions struct {
	// ID names or completes the kernel's identity (zero: from the source).
	ID kernel.ID
	// Replace lets another BTF replace an existing kernel id.
	Replace bool
}

func (o ImportOptions) query(name string) url.Values {
	q := url.Values{}
	if o.ID != (kernel.ID{}) {
		q.Set("id", o.ID.String())
	}
	if o.Replace {
		q.Set("replace", "true")
	}
	if name != "" {
		q.Set("name", name)
	}
	return q
}

// ImportKernelFile uploads one kernel file (.btf.tar.xz, raw BTF, vmlinux,
// linux-image .deb, kernel image) for the server to import. body is the
// file's content, streamed.
func (c *Client) ImportKernelFile(ctx context.Context, name string, body io.Reader, opt ImportOptions) (*api.KernelImport, error) {
	resp, err := c.Do(ctx, http.MethodPost, "/api/v1/kernels", opt.query(filepath.Base(name)), body, "application/octet-stream", nil)
	var ae *APIError
	if errors.As(err, &ae) {
		return nil, err // the server's message names the file
	} else if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	defer resp.Body.Close()
	var res api.KernelImport
	return &res, decode(resp, &res)
}

// ImportKernel uploads a kernel read locally with package source: its raw
// BTF, its modules' split BTF and its config. Agents use it to give the
// server their own kernel's BTF.
func (c *Client) ImportKernel(ctx context.Context, k *source.Kernel, opt ImportOptions) (*api.KernelImport, error) {
	if opt.ID == (kernel.ID{}) {
		opt.ID = k.ID
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	part := func(field, filename string, data []byte) error {
		w, err := mw.CreateFormFile(field, filename)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	if err := part("btf", "vmlinux", k.BTF); err != nil {
		return nil, err
	}
	for _, m := range k.Modules {
		if err := part("module", m.Name, m.BTF); err != nil {
			return nil, err
		}
	}
	if len(k.Config) > 0 {
		if err := part("config", "config", k.Config); err != nil {
			return nil, err
		}
	}
	if k.Build != "" {
		mw.WriteField("build", k.Build)
	}
	mw.WriteField("source", k.Source)
	mw.Close()
	resp, err := c.Do(ctx, http.MethodPost, "/api/v1/kernels", opt.query(""), &buf, mw.FormDataContentType(), nil)
	if err != nil {
		return nil, fmt.Errorf("import kernel %s: %w", opt.ID, err)
	}
	defer resp.Body.Close()
	var res api.KernelImport
	return &res, decode(resp, &res)
}

// Kernels lists the archive's kernels, of one arch when arch is not empty.
func (c *Client) Kernels(ctx context.Context, arch string) ([]api.Kernel, error) {
	q := url.Values{}
	if arch != "" {
		q.Set("arch", arch)
	}
	var ks []api.Kernel
	return ks, c.getJSON(ctx, "/api/v1/kernels", q, &ks)
}

// Resolve finds a program's artifact for a kernel id, waiting up to wait
// for a relocation in progress. revision may be empty (the newest).
func (c *Client) Resolve(ctx context.Context, program, kernelID, revision string, wait time.Duration) (*api.Resolved, error) {
	q := url.Values{"kernel": {kernelID}}
	if revision != "" {
		q.Set("revision", revision)
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var r api.Resolved
	if err := c.getJSON(ctx, "/api/v1/programs/"+url.PathEscape(program)+"/artifact", q, &r); err != nil {
		return nil, fmt.Errorf("resolve %s for %s: %w", program, kernelID, err)
	}
	return &r, nil
}

// Artifacts lists artifacts of a program (all when empty).
func (c *Client) Artifacts(ctx context.Context, program, kernelID string) ([]api.Artifact, error) {
	q := url.Values{}
	if program != "" {
		q.Set("program", program)
	}
	if kernelID != "" {
		q.Set("kernel", kernelID)
	}
	var as []api.Artifact
	return as, c.getJSON(ctx, "/api/v1/artifacts", q, &as)
}

// Blob downloads a blob by digest, refusing more than max bytes.
func (c *Client) Blob(ctx context.Context, digest string, max int64) ([]byte, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/api/v1/blobs/"+url.PathEscape(digest), nil, nil, "", nil)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", digest, err)
	}
	defer resp.Body.Close()
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil && n > max {
		return nil, fmt.Errorf("blob %s: %d bytes, more than %d", digest, n, max)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", digest, unavailable(err))
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("blob %s: more than %d bytes", digest, max)
	}
	return b, nil
}

// PutKernelImage attaches a bootable kernel image (body, streamed) to the
// archive's kernel kid, so that the farm can verify artifacts on it.
func (c *Client) PutKernelImage(ctx context.Context, kid string, body io.Reader) (*api.Kernel, error) {
	id, err := kernel.ParseID(kid)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, http.MethodPut, "/api/v1/kernels/"+id.String()+"/image", nil, body, "application/octet-stream", nil)
	if err != nil {
		return nil, fmt.Errorf("kernel image of %s: %w", kid, err)
	}
	defer resp.Body.Close()
	var k api.Kernel
	return &k, decode(resp, &k)
}
