package web

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/store"
)

// maxKernelUpload bounds a kernel upload, as the REST API does.
const maxKernelUpload = 512 << 20

type kernelGroup struct {
	Distro, Version, Arch string
	Kernels               int
	BTF                   int64
	Tally
}

type kernelsData struct {
	Groups    []kernelGroup
	Kernels   []kernelRow // this page of the (filtered) list
	Query     string
	Total     int
	Matching  int
	Pages     pager
	CanImport bool
	Tally
}

// kernelsPerPage bounds the kernel list of one page.
const kernelsPerPage = 200

func (u *UI) canImport(r *http.Request) bool {
	return viewerOf(r).IsAdmin() && u.cfg.Intake != nil
}

func sortKernels[T any](ks []T, key func(T) (distro, version, arch, release string)) {
	slices.SortFunc(ks, func(a, b T) int {
		ad, av, aa, ar := key(a)
		bd, bv, ba, br := key(b)
		return cmp.Or(strings.Compare(ad, bd), naturalCompare(av, bv), strings.Compare(aa, ba), -kernel.CompareRelease(ar, br))
	})
}

func (u *UI) kernelsPage(w http.ResponseWriter, r *http.Request) {
	ks, err := u.kernelOverview(r.Context())
	if err != nil {
		u.fail(w, r, err)
		return
	}
	sortKernels(ks, func(k kernelRow) (string, string, string, string) { return k.Distro, k.Version, k.Arch, k.Release })
	d := kernelsData{Query: strings.TrimSpace(r.URL.Query().Get("q")), Total: len(ks), CanImport: u.canImport(r)}
	var g *kernelGroup
	for _, k := range ks {
		if g == nil || g.Distro != k.Distro || g.Version != k.Version || g.Arch != k.Arch {
			d.Groups = append(d.Groups, kernelGroup{Distro: k.Distro, Version: k.Version, Arch: k.Arch})
			g = &d.Groups[len(d.Groups)-1]
		}
		g.Kernels++
		g.BTF += k.BTFSize
		g.Merge(k.Tally)
		d.Merge(k.Tally)
		if d.Query == "" || strings.Contains(k.KID, d.Query) || strings.Contains(k.Source, d.Query) {
			d.Kernels = append(d.Kernels, k)
		}
	}
	d.Matching = len(d.Kernels)
	d.Pages = paginate(r, d.Matching, kernelsPerPage)
	d.Kernels = d.Kernels[d.Pages.From:d.Pages.To]
	u.render(w, r, http.StatusOK, "kernels.html", page{Title: "Kernels", Active: "kernels", Data: d})
}

type kernelData struct {
	Kernel   store.Kernel
	Programs []kernelProgram
	Hosts    int
	Tally
}

func (u *UI) kernelPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	k, err := u.cfg.DB.Kernel(ctx, strings.Trim(r.PathValue("kid"), "/"))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := kernelData{Kernel: k}
	if d.Programs, err = u.cfg.DB.KernelArtifacts(ctx, k.ID); err != nil {
		u.fail(w, r, err)
		return
	}
	for _, p := range d.Programs {
		d.Add(p.State, p.Status, 1)
	}
	if d.Hosts, err = u.cfg.DB.HostsWithKernel(ctx, k.KID); err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "kernel.html", page{Title: "Kernel " + k.KID, Active: "kernels", Data: d})
}

type importedKernel struct {
	KID     string
	Created bool
	Queued  int
	BTFSize int64
	Modules int
	Source  string
}

type importData struct {
	Kernels []importedKernel
	// Refused lists the files of a btfhub-archive tree not imported.
	Refused []api.KernelRefused
	Error   string
}

func (d *importData) add(imp intake.Imported) {
	d.Kernels = append(d.Kernels, importedKernel{KID: imp.Kernel.KID, Created: imp.Created, Queued: imp.Queued,
		BTFSize: imp.Kernel.BTFSize, Modules: imp.Kernel.ModulesCount, Source: imp.Kernel.Source})
}

// readMultipart opens a multipart form whose first part must be the CSRF
// token: a forged upload is refused before its body is read.
func (u *UI) readMultipart(w http.ResponseWriter, r *http.Request, max int64) (*multipart.Reader, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, max)
	mr, err := r.MultipartReader()
	if err != nil {
		u.errorPage(w, r, http.StatusBadRequest, "Unreadable form.")
		return nil, false
	}
	p, err := mr.NextPart()
	if err != nil || p.FormName() != "csrf" {
		u.csrfFailure(w, r)
		return nil, false
	}
	tok, _ := io.ReadAll(io.LimitReader(p, 256))
	if !viewerOf(r).checkCSRF(string(tok)) {
		u.csrfFailure(w, r)
		return nil, false
	}
	return mr, true
}

func (u *UI) tempDir() string {
	if u.cfg.TempDir != "" {
		return u.cfg.TempDir
	}
	return os.TempDir()
}

// importKernel imports an uploaded kernel file through the intake, as
// POST /api/v1/kernels does: from a temporary file, every kernel it holds
// is stored and its relocations queued.
func (u *UI) importKernel(w http.ResponseWriter, r *http.Request) {
	if !u.canImport(r) {
		u.errorPage(w, r, http.StatusNotFound, "This server does not import kernels.")
		return
	}
	mr, ok := u.readMultipart(w, r, maxKernelUpload)
	if !ok {
		return
	}
	var (
		opt  = archive.ImportOptions{By: viewerOf(r).Name}
		tmp  string
		name = "upload"
	)
	defer func() {
		if tmp != "" {
			os.Remove(tmp)
		}
	}()
	fail := func(code int, msg string) {
		u.render(w, r, code, "imported.html", page{Title: "Kernel import", Active: "kernels", Data: importData{Error: msg}})
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("The upload exceeds %d MiB.", maxKernelUpload>>20))
			return
		}
		if err != nil {
			fail(http.StatusBadRequest, "Unreadable form: "+err.Error())
			return
		}
		switch p.FormName() {
		case "id":
			v, _ := io.ReadAll(io.LimitReader(p, 1024))
			if s := strings.TrimSpace(string(v)); s != "" {
				id, err := kernel.ParseID(s)
				if err != nil {
					fail(http.StatusBadRequest, capitalize(err.Error())+".")
					return
				}
				opt.ID = id
			}
		case "replace":
			v, _ := io.ReadAll(io.LimitReader(p, 16))
			opt.Replace = strings.TrimSpace(string(v)) != ""
		case "file":
			if p.FileName() == "" || tmp != "" {
				continue
			}
			name = safeFilename(p.FileName())
			f, err := os.CreateTemp(u.tempDir(), "kernel-upload-*")
			if err != nil {
				u.serverError(w, r, err)
				return
			}
			tmp = f.Name()
			_, err = io.Copy(f, p)
			f.Close()
			if errors.As(err, &mbe) {
				fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("The upload exceeds %d MiB.", maxKernelUpload>>20))
				return
			}
			if err != nil {
				fail(http.StatusBadRequest, "Upload interrupted: "+err.Error())
				return
			}
		default:
			fail(http.StatusBadRequest, fmt.Sprintf("Unknown form field %q.", p.FormName()))
			return
		}
	}
	if tmp == "" {
		fail(http.StatusBadRequest, "Choose a file to import.")
		return
	}
	fi, err := u.cfg.Intake.ImportFile(r.Context(), tmp, name, opt)
	if err != nil {
		u.importFailed(w, r, err)
		return
	}
	d := importData{Refused: fi.Refused}
	for _, imp := range fi.Kernels {
		d.add(imp)
	}
	u.render(w, r, http.StatusOK, "imported.html", page{Title: "Kernel import", Active: "kernels", Data: d})
}

// importHostKernel imports the kernel the server runs on (its
// /sys/kernel/btf), as `bpfarm kernels import --host` does on a host.
func (u *UI) importHostKernel(w http.ResponseWriter, r *http.Request) {
	if !u.canImport(r) {
		u.errorPage(w, r, http.StatusNotFound, "This server does not import kernels.")
		return
	}
	imp, err := u.cfg.Intake.ImportHost(r.Context(), archive.ImportOptions{By: viewerOf(r).Name})
	if err != nil {
		u.importFailed(w, r, err)
		return
	}
	var d importData
	d.add(imp)
	u.render(w, r, http.StatusOK, "imported.html", page{Title: "Kernel import", Active: "kernels", Data: d})
}

// importFailed answers a refused import (bad input: 400 on the import
// page), or another failure.
func (u *UI) importFailed(w http.ResponseWriter, r *http.Request, err error) {
	var in *archive.InputError
	if errors.As(err, &in) {
		u.render(w, r, http.StatusBadRequest, "imported.html", page{Title: "Kernel import", Active: "kernels",
			Data: importData{Error: capitalize(oneLine(err.Error())) + "."}})
		return
	}
	u.fail(w, r, err)
}
