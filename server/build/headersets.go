package build

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/compile"
	"github.com/bpfarm/bpfarm/bpfsrc/headerset"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/store"
)

// ImportHeaderSet stores set under name: each header as a blob, the set as
// rows. Importing the same set again under the same name changes nothing;
// other headers under an existing name are refused (store.ErrConflict).
func (s *Service) ImportHeaderSet(ctx context.Context, name string, set *headerset.Set, by string) (api.HeaderSetImport, error) {
	if err := headerset.ValidName(name); err != nil {
		return api.HeaderSetImport{}, &InputError{err}
	}
	var size int64
	files := make([]store.HeaderFile, 0, len(set.Files))
	for _, f := range set.Files {
		d, err := blob.PutBytes(ctx, s.blobs, f.Data)
		if err != nil {
			return api.HeaderSetImport{}, fmt.Errorf("store header %s: %w", f.Name, err)
		}
		files = append(files, store.HeaderFile{Name: f.Name, Blob: d.String(), Size: int64(len(f.Data))})
		size += int64(len(f.Data))
	}
	hs, created, err := s.db.PutHeaderSet(ctx, api.HeaderSet{Name: name, Digest: set.Digest, Version: set.Version,
		Size: size, ImportedBy: by}, files)
	if err != nil {
		return api.HeaderSetImport{}, err
	}
	if created {
		s.log.Info("header set imported", "name", name, "version", set.Version, "digest", set.Digest, "files", len(files))
	}
	return api.HeaderSetImport{HeaderSet: hs, Created: created}, nil
}

// HeaderSets lists the header sets pushes may name: the imported ones,
// newest first, then the built-in one. The newest imported set is the
// default.
func (s *Service) HeaderSets(ctx context.Context) ([]api.HeaderSet, error) {
	sets, err := s.db.HeaderSets(ctx)
	if err != nil {
		return nil, err
	}
	if len(sets) > 0 {
		sets[0].Default = true
	}
	b := s.compiler.Headers().Builtin()
	var size int64
	for _, f := range b.Files {
		size += int64(len(f.Data))
	}
	return append(sets, api.HeaderSet{Name: headerset.BuiltinName, Digest: b.Digest, Version: b.Version,
		Files: len(b.Files), Size: size, Builtin: true, Default: len(sets) == 0}), nil
}

// resolveHeaderSet names the set a push compiles with: name, or the
// newest imported set when name is "", and "" for the built-in one.
func (s *Service) resolveHeaderSet(ctx context.Context, name string) (string, error) {
	switch name {
	case headerset.BuiltinName:
		return "", nil
	case "":
		sets, err := s.db.HeaderSets(ctx)
		if err != nil || len(sets) == 0 {
			return "", err
		}
		return sets[0].Name, nil
	}
	if _, _, err := s.db.HeaderSet(ctx, name); errors.Is(err, store.ErrNotFound) {
		return "", &InputError{fmt.Errorf("header set %q is not imported (see bpfarm headers list)", name)}
	} else if err != nil {
		return "", err
	}
	return name, nil
}

// libbpfSet returns the imported set name installed for the compiler; ""
// is the built-in set (nil).
func (s *Service) libbpfSet(ctx context.Context, name string) (*compile.LibbpfSet, error) {
	if name == "" {
		return nil, nil
	}
	hs, files, err := s.db.HeaderSet(ctx, name)
	if err != nil {
		return nil, err
	}
	h := s.compiler.Headers()
	if ls, ok := h.InstalledSet(hs.Digest); ok {
		return ls, nil
	}
	var fs []bpfsrc.File
	for _, f := range files {
		d, err := blob.ParseDigest(f.Blob)
		if err != nil {
			return nil, fmt.Errorf("header set %s: %s: %w", name, f.Name, err)
		}
		rc, err := s.blobs.Get(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("header set %s: %s: %w", name, f.Name, err)
		}
		data, err := io.ReadAll(io.LimitReader(rc, headerset.Limits.MaxFileSize+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("header set %s: %s: %w", name, f.Name, err)
		}
		fs = append(fs, bpfsrc.File{Name: f.Name, Data: data})
	}
	set, err := headerset.New(fs)
	if err != nil {
		return nil, fmt.Errorf("header set %s: stored headers: %w", name, err)
	}
	if set.Digest != hs.Digest {
		return nil, fmt.Errorf("header set %s: stored headers have digest %s, recorded %s", name, set.Digest, hs.Digest)
	}
	return h.InstallSet(set)
}
