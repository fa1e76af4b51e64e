// Package intake is where work enters a bpfarm server: kernels imported
// into the archive with the work they imply queued, and revisions pushed
// with their builds queued. Every door calls it — the REST API
// (server/httpapi), the web UI (package web) and the server's own first
// start — so that each operation is written out once.
package intake

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/store"
)

// Config wires the intake to the server's parts.
type Config struct {
	Archive *archive.Archive
	Builds  *build.Service
	// TempDir holds kernels' files while they are read (default
	// os.TempDir()).
	TempDir string
}

// Service takes kernels and revisions in.
type Service struct {
	archive *archive.Archive
	builds  *build.Service
	tempDir string
}

// New returns the intake.
func New(cfg Config) *Service {
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	return &Service{archive: cfg.Archive, builds: cfg.Builds, tempDir: cfg.TempDir}
}

// Imported is one kernel imported, and how many relocations it queued.
type Imported struct {
	Kernel  store.Kernel
	Created bool
	Queued  int
}

// Import stores a kernel that package source read with the work a new
// kernel implies, committed with it (store.DB.PutKernel): the relocation
// of every program's latest build for it, and the verifications its image
// allows. Bad input is an *archive.InputError.
func (s *Service) Import(ctx context.Context, k *source.Kernel, opt archive.ImportOptions) (Imported, error) {
	defer removeImage(k)
	imp, err := s.archive.Store(ctx, k, opt)
	if err != nil {
		return Imported{}, err
	}
	return Imported{Kernel: imp.Kernel, Created: imp.Created, Queued: imp.Queued}, nil
}

// FileImport is the outcome of importing a file.
type FileImport struct {
	Kernels []Imported
	// Refused lists the files of a btfhub-archive tree that were not
	// imported, and why; the others were.
	Refused []api.KernelRefused
}

// ImportFile imports every kernel of a file in any format package source
// reads (.btf.tar.xz, raw BTF, vmlinux ELF, linux-image .deb, kernel
// image, or a tar of a btfhub-archive tree). name is the file's name as
// the caller knows it, used in messages in place of path.
//
// A tree imports its good files and lists the refused ones; opt.ID, which
// names one kernel, is refused for a tree. Any other bad input is an
// *archive.InputError and imports nothing.
func (s *Service) ImportFile(ctx context.Context, path, name string, opt archive.ImportOptions) (FileImport, error) {
	var (
		res     FileImport
		kernels []*source.Kernel
		tree    bool
	)
	defer func() {
		for _, k := range kernels {
			removeImage(k)
		}
	}()
	rename := func(s string) string { return strings.ReplaceAll(s, path, name) }
	err := source.Import(ctx, path, source.Options{TempDir: s.tempDir, KeepImage: true}, func(k *source.Kernel) error {
		k.Source = rename(k.Source)
		kernels = append(kernels, k)
		return nil
	})
	var te *source.TreeError
	switch {
	case errors.As(err, &te):
		tree = true
		for _, fe := range te.Refused {
			res.Refused = append(res.Refused, api.KernelRefused{Path: rename(fe.Path), Error: rename(oneLine(fe.Err.Error()))})
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return res, err
	case err != nil:
		return res, &archive.InputError{Err: errors.New(rename(oneLine(err.Error())))}
	}
	tree = tree || len(kernels) > 1
	if tree && opt.ID != (kernel.ID{}) {
		return res, &archive.InputError{Err: errors.New("id names one kernel: a btfhub-archive tree names its kernels by their paths")}
	}
	for _, k := range kernels {
		imp, err := s.Import(ctx, k, opt)
		var in *archive.InputError
		if tree && errors.As(err, &in) {
			res.Refused = append(res.Refused, api.KernelRefused{Path: k.ID.String(), Error: oneLine(err.Error())})
			continue
		}
		if err != nil {
			return res, err
		}
		res.Kernels = append(res.Kernels, imp)
	}
	return res, nil
}

// ImportHost imports the kernel this server runs on (its
// /sys/kernel/btf), as `bpfarm kernels import --host` does on a host. A
// machine without BTF is an *archive.InputError.
func (s *Service) ImportHost(ctx context.Context, opt archive.ImportOptions) (Imported, error) {
	k, err := source.Host(source.Options{TempDir: s.tempDir})
	if err != nil {
		return Imported{}, &archive.InputError{Err: fmt.Errorf("this server's kernel: %w", err)}
	}
	return s.Import(ctx, k, opt)
}

// Push stores a revision and queues its builds (see build.Service.Push).
func (s *Service) Push(ctx context.Context, req build.PushRequest) (api.PushResult, error) {
	return s.builds.Push(ctx, req)
}

func removeImage(k *source.Kernel) {
	if k.Image != "" {
		os.Remove(k.Image)
		k.Image = ""
	}
}

func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}
