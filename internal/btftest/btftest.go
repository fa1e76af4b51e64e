// Package btftest makes kernel BTF in the shapes found in the wild, from
// real kernel BTF, for tests: duplicate type definitions as pahole left
// them in old kernels (btfhub-archive's 4.18 and 4.19), kernels without
// some types, and btfhub-archive .btf.tar.xz files and trees.
package btftest

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/ulikunitz/xz"
)

// Rewrite describes how to rewrite a kernel's BTF.
type Rewrite struct {
	// Identical lists structs to define twice, the second definition
	// identical to the first (what pahole left in 4.18/4.19 BTF: two
	// struct task_struct).
	Identical []string
	// Differing maps a struct to one of its members: the struct gets a
	// second definition that differs from the first in that member's
	// offset (64 bits further), so that relocations reading the member
	// are ambiguous.
	Differing map[string]string
	// Drop lists named types to remove, with every member, parameter or
	// pointer that refers to them replaced by void (a kernel older than
	// those types).
	Drop []string
}

// Apply rewrites raw kernel BTF as r says and returns the new raw BTF.
func (r Rewrite) Apply(raw []byte) ([]byte, error) {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	drop := map[string]bool{}
	for _, n := range r.Drop {
		drop[n] = true
	}
	var types, extra []btf.Type
	seen := map[string]bool{}
	for typ, err := range spec.All() {
		if err != nil {
			return nil, err
		}
		if drop[typ.TypeName()] {
			seen[typ.TypeName()] = true
			continue
		}
		types = append(types, typ)
		s, ok := typ.(*btf.Struct)
		if !ok || seen["struct "+s.Name] {
			continue
		}
		if slices.Contains(r.Identical, s.Name) {
			seen["struct "+s.Name] = true
			cpy := *s
			cpy.Members = slices.Clone(s.Members)
			extra = append(extra, &cpy)
		}
		if field, ok := r.Differing[s.Name]; ok {
			seen["struct "+s.Name] = true
			cpy := *s
			cpy.Members = slices.Clone(s.Members)
			i := slices.IndexFunc(cpy.Members, func(m btf.Member) bool { return m.Name == field })
			if i < 0 {
				return nil, fmt.Errorf("no %s.%s in BTF", s.Name, field)
			}
			cpy.Members[i].Offset += 64
			extra = append(extra, &cpy)
		}
	}
	for _, n := range r.Drop {
		if !seen[n] {
			return nil, fmt.Errorf("no type %s in BTF", n)
		}
	}
	for _, n := range r.Identical {
		if !seen["struct "+n] {
			return nil, fmt.Errorf("no struct %s in BTF", n)
		}
	}
	for n := range r.Differing {
		if !seen["struct "+n] {
			return nil, fmt.Errorf("no struct %s in BTF", n)
		}
	}
	types = append(types, extra...)
	if len(drop) > 0 {
		for _, t := range types {
			voidDropped(t, drop)
		}
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		return nil, err
	}
	return b.Marshal(nil, nil)
}

// voidDropped replaces the references of t to dropped types by void.
func voidDropped(t btf.Type, drop map[string]bool) {
	gone := func(u btf.Type) bool { return u != nil && drop[u.TypeName()] }
	switch v := t.(type) {
	case *btf.Struct:
		for i := range v.Members {
			if gone(v.Members[i].Type) {
				v.Members[i].Type = &btf.Void{}
			}
		}
	case *btf.Union:
		for i := range v.Members {
			if gone(v.Members[i].Type) {
				v.Members[i].Type = &btf.Void{}
			}
		}
	case *btf.Pointer:
		if gone(v.Target) {
			v.Target = &btf.Void{}
		}
	case *btf.Typedef:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	case *btf.FuncProto:
		if gone(v.Return) {
			v.Return = &btf.Void{}
		}
		for i := range v.Params {
			if gone(v.Params[i].Type) {
				v.Params[i].Type = &btf.Void{}
			}
		}
	case *btf.Func:
		if gone(v.Type) {
			v.Type = &btf.FuncProto{Return: &btf.Void{}}
		}
	case *btf.Var:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	case *btf.Array:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	case *btf.Const:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	case *btf.Volatile:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	case *btf.Restrict:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	case *btf.TypeTag:
		if gone(v.Type) {
			v.Type = &btf.Void{}
		}
	}
}

// HostBTF returns the running kernel's BTF, /sys/kernel/btf/vmlinux.
func HostBTF() ([]byte, error) {
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		return nil, fmt.Errorf("host BTF: %w", err)
	}
	return raw, nil
}

// BTFHubFile returns a btfhub-archive file: an xz-compressed tar with one
// entry, NAME (RELEASE.btf in btfhub-archive), holding raw.
func BTFHubFile(name string, raw []byte) ([]byte, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(raw)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(raw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	w, err := xz.NewWriter(&out)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(tb.Bytes()); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// WriteTree writes files (path relative to root → content) under root, as
// a btfhub-archive tree, and returns the paths written by relative path.
func WriteTree(root string, files map[string][]byte) (map[string]string, error) {
	if len(files) == 0 {
		return nil, errors.New("no files")
	}
	out := map[string]string{}
	for rel, data := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
		out[rel] = p
	}
	return out, nil
}
