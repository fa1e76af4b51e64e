package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// RefusedFile is a file of a btfhub-archive tree that was not imported.
type RefusedFile struct {
	// Path is the file.
	Path string
	// Err says why, on one line: the server's refusal, or why the file's
	// path is not DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz.
	Err error
}

// TreeImport is the outcome of importing a btfhub-archive tree.
type TreeImport struct {
	// Kernels holds what the server answered for each imported file.
	Kernels []api.KernelImported
	// Refused lists the files the server (or the tree's layout) refused.
	Refused []RefusedFile
}

// Counts returns how many kernels were imported (new), unchanged (already
// in the archive with the same BTF) and refused.
func (t *TreeImport) Counts() (imported, unchanged, refused int) {
	for _, k := range t.Kernels {
		if k.Created {
			imported++
		} else {
			unchanged++
		}
	}
	return imported, unchanged, len(t.Refused)
}

// Summary returns "imported N, unchanged M, refused K".
func (t *TreeImport) Summary() string {
	i, u, r := t.Counts()
	return fmt.Sprintf("imported %d, unchanged %d, refused %d", i, u, r)
}

// TreeFileFunc uploads one file of a tree: body to the server, as
// ImportKernelFile does.
type TreeFileFunc func(ctx context.Context, path string, size int64, opt ImportOptions) (*api.KernelImport, error)

// ImportTree imports every DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz under
// dir, a btfhub-archive tree (or a subtree), in lexical order, each under
// the ID its path gives (arch directories may be aliases: aarch64 is
// arm64). upload sends one file (nil: ImportKernelFile). A file that is
// refused — its path is not an ID, or the server answers 4xx — is recorded
// in Refused, reported to refused if not nil, and the import goes on; any
// other error (the server unreachable, a 5xx) stops it. opt.Replace
// applies to every file; opt.ID is ignored.
func (c *Client) ImportTree(ctx context.Context, dir string, opt ImportOptions, upload TreeFileFunc, refused func(RefusedFile)) (*TreeImport, error) {
	if upload == nil {
		upload = func(ctx context.Context, path string, _ int64, opt ImportOptions) (*api.KernelImport, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			return c.ImportKernelFile(ctx, path, f, opt)
		}
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, source.BTFHubSuffix) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no DISTRO/VERSION/ARCH/RELEASE%s files (not a btfhub-archive tree)", dir, source.BTFHubSuffix)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	out := &TreeImport{}
	refuse := func(p string, err error) {
		rf := RefusedFile{Path: p, Err: err}
		out.Refused = append(out.Refused, rf)
		if refused != nil {
			refused(rf)
		}
	}
	for _, p := range files {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return out, err
		}
		kid, err := source.TreeID(filepath.Join(abs, rel))
		if err != nil {
			refuse(p, err)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			refuse(p, err)
			continue
		}
		if !st.Mode().IsRegular() {
			refuse(p, errors.New("not a regular file"))
			continue
		}
		o := opt
		o.ID = kid
		res, err := upload(ctx, p, st.Size(), o)
		var ae *APIError
		switch {
		case errors.As(err, &ae) && !errors.Is(err, ErrUnauthorized) && !errors.Is(err, ErrUnavailable):
			refuse(p, err) // the server refused this file (4xx)
		case err != nil:
			return out, err
		default:
			out.Kernels = append(out.Kernels, res.Kernels...)
		}
	}
	return out, nil
}

// ReferenceKernels lists each arch's reference kernel for CO-RE compiles.
func (c *Client) ReferenceKernels(ctx context.Context) ([]api.ReferenceKernel, error) {
	var out []api.ReferenceKernel
	return out, c.getJSON(ctx, "/api/v1/reference-kernels", nil, &out)
}

// PinReference pins kernel kid as its arch's reference kernel (admin).
func (c *Client) PinReference(ctx context.Context, kid string) (*api.ReferenceKernel, error) {
	id, err := kernel.ParseID(kid)
	if err != nil {
		return nil, err
	}
	var out api.ReferenceKernel
	if err := c.send(ctx, http.MethodPut, "/api/v1/reference-kernels/"+id.Arch, nil, api.ReferencePin{Kernel: id.String()}, &out); err != nil {
		return nil, fmt.Errorf("pin %s: %w", id, err)
	}
	return &out, nil
}

// UnpinReference unpins arch's reference kernel (admin): its newest kernel
// is the reference again.
func (c *Client) UnpinReference(ctx context.Context, arch string) error {
	a, err := kernel.NormalizeArch(arch)
	if err != nil {
		return err
	}
	if err := c.send(ctx, http.MethodDelete, "/api/v1/reference-kernels/"+a, nil, nil, nil); err != nil {
		return fmt.Errorf("unpin %s: %w", a, err)
	}
	return nil
}
