// Package headerset is a versioned set of libbpf headers: the files a BPF
// program finds as <bpf/bpf_helpers.h>, <bpf/bpf_tracing.h>,
// <bpf/usdt.bpf.h> and so on. The farm has a built-in set (the host's
// libbpf-dev) and admins import others, for example a newer libbpf's src/
// directory; a push names the set it compiles with.
//
// A set comes from a publisher and is hostile until checked: it is read with
// the source bundle rules of package bpfsrc (regular files only, clean
// relative names, bounded sizes), and beyond them holds only flat *.h files,
// at most Limits, among them bpf_helpers.h.
package headerset

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

// Limits bound a header set. libbpf 1.5's installed headers are 13 files,
// some 600 KiB (bpf_helper_defs.h alone is 200 KiB); its src/ directory
// holds 25 headers.
var Limits = bpfsrc.Limits{MaxTotalSize: 4 << 20, MaxFiles: 64, MaxFileSize: 1 << 20, MaxPathLen: 128, MaxDepth: 1}

// Required is the header every set must hold.
const Required = "bpf_helpers.h"

// BuiltinName names the farm's built-in set, the host's libbpf-dev.
const BuiltinName = "builtin"

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	headerRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.+-]*\.h$`)
)

// ValidName checks the name of a set.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return &InvalidError{Reason: fmt.Sprintf("name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", name)}
	}
	if name == BuiltinName {
		return &InvalidError{Reason: fmt.Sprintf("name %q is the farm's built-in set", name)}
	}
	return nil
}

// InvalidError is a header set refused for its content; its message is one
// line.
type InvalidError struct {
	// Path is the offending file, or "".
	Path string
	// Reason is the rule broken.
	Reason string
	Err    error
}

// Error implements error.
func (e *InvalidError) Error() string {
	if e.Path == "" {
		return "header set: " + e.Reason
	}
	p := e.Path
	if len(p) > 200 {
		p = p[:200] + "..."
	}
	return fmt.Sprintf("header set: %q: %s", p, e.Reason)
}

// Unwrap returns the underlying error.
func (e *InvalidError) Unwrap() error { return e.Err }

// Set is a checked header set.
type Set struct {
	// Files are the headers, flat names ("bpf_helpers.h"), sorted.
	Files []bpfsrc.File
	// Digest is the SHA-256 of the set's canonical form (see Digest).
	Digest string
	// Version is libbpf's version from libbpf_version.h ("1.5"), or "".
	Version string
}

// ReadTarGz reads a set from a gzip-compressed tar archive of headers:
// either flat ("bpf_helpers.h") or all under one directory ("bpf/…",
// "src/…"), as `tar czf - -C libbpf/src .` or an install tree gives.
func ReadTarGz(r io.Reader) (*Set, error) {
	files, err := bpfsrc.ReadTarGzFiles(r, Limits)
	if err != nil {
		return nil, wrap(err)
	}
	return New(files)
}

// New checks files and returns them as a set.
func New(files []bpfsrc.File) (*Set, error) {
	// One directory holding everything is stripped; the depth limit
	// refuses anything deeper.
	files = stripCommonDir(files)
	files, err := bpfsrc.Validate(files, Limits)
	if err != nil {
		return nil, wrap(err)
	}
	if len(files) == 0 {
		return nil, &InvalidError{Reason: "no files"}
	}
	for _, f := range files {
		if strings.Contains(f.Name, "/") {
			return nil, &InvalidError{Path: f.Name, Reason: "headers must sit in one directory"}
		}
		if !headerRE.MatchString(f.Name) {
			return nil, &InvalidError{Path: f.Name, Reason: "not a header: only *.h files (letters, digits, '_', '.', '+', '-') are allowed"}
		}
		if bytes.IndexByte(f.Data, 0) >= 0 {
			return nil, &InvalidError{Path: f.Name, Reason: "holds a NUL byte: not a text header"}
		}
	}
	if !slices.ContainsFunc(files, func(f bpfsrc.File) bool { return f.Name == Required }) {
		return nil, &InvalidError{Reason: "no " + Required + ": not a libbpf header set"}
	}
	s := &Set{Files: files, Digest: digest(files)}
	for _, f := range files {
		if f.Name == "libbpf_version.h" {
			s.Version = parseVersion(f.Data)
		}
	}
	return s, nil
}

// ReadDir reads the headers of a directory: its *.h files, or those of its
// bpf/ subdirectory when it has one (an install tree such as /usr/include).
// Other files are left out; symbolic links to regular files are followed.
func ReadDir(dir string) ([]bpfsrc.File, error) {
	if st, err := os.Stat(filepath.Join(dir, "bpf", Required)); err == nil && st.Mode().IsRegular() {
		dir = filepath.Join(dir, "bpf")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []bpfsrc.File
	var total int64
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".h") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			continue
		}
		if total += st.Size(); total > Limits.MaxTotalSize || len(files) >= Limits.MaxFiles {
			return nil, &InvalidError{Reason: fmt.Sprintf("%s holds more than %d headers or %d bytes", dir, Limits.MaxFiles, Limits.MaxTotalSize)}
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		files = append(files, bpfsrc.File{Name: e.Name(), Data: data})
	}
	if len(files) == 0 {
		return nil, &InvalidError{Reason: "no *.h files in " + dir}
	}
	return files, nil
}

// WriteTarGz writes s as a deterministic tar.gz that ReadTarGz accepts.
func (s *Set) WriteTarGz(w io.Writer) error {
	return (&bpfsrc.Bundle{Files: s.Files}).WriteTarGz(w)
}

// Install writes s's headers into dir/bpf/, the layout the compiler binds
// as its libbpf include directory. dir must not exist yet or be empty.
func (s *Set) Install(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install header set: %w", err)
	}
	b := &bpfsrc.Bundle{Files: make([]bpfsrc.File, len(s.Files))}
	for i, f := range s.Files {
		b.Files[i] = bpfsrc.File{Name: "bpf/" + f.Name, Data: f.Data}
	}
	if err := b.Extract(dir); err != nil {
		return fmt.Errorf("install header set: %w", err)
	}
	return nil
}

// Digest is the SHA-256 of files (flat names) in canonical form: per file
// in name order, the name, NUL, the decimal length, NUL and the contents.
func Digest(files []bpfsrc.File) string { return digest(files) }

func digest(files []bpfsrc.File) string {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b bpfsrc.File) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	for _, f := range sorted {
		io.WriteString(h, f.Name)
		h.Write([]byte{0})
		io.WriteString(h, strconv.Itoa(len(f.Data)))
		h.Write([]byte{0})
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var versionRE = regexp.MustCompile(`(?m)^#define\s+LIBBPF_(MAJOR|MINOR)_VERSION\s+(\d{1,4})\s*$`)

// parseVersion reads "MAJOR.MINOR" from libbpf_version.h.
func parseVersion(data []byte) string {
	var major, minor string
	for _, m := range versionRE.FindAllSubmatch(data, -1) {
		if string(m[1]) == "MAJOR" {
			major = string(m[2])
		} else {
			minor = string(m[2])
		}
	}
	if major == "" || minor == "" {
		return ""
	}
	return major + "." + minor
}

// stripCommonDir removes a first path component shared by every file
// ("bpf/x.h", "./src/y.h").
func stripCommonDir(files []bpfsrc.File) []bpfsrc.File {
	var dir string
	for i, f := range files {
		name := strings.TrimPrefix(f.Name, "./")
		d, _, ok := strings.Cut(name, "/")
		if !ok || (i > 0 && d != dir) {
			return files
		}
		dir = d
	}
	if dir == "" || dir == "." || dir == ".." {
		return files
	}
	out := make([]bpfsrc.File, len(files))
	for i, f := range files {
		_, rest, _ := strings.Cut(strings.TrimPrefix(f.Name, "./"), "/")
		out[i] = bpfsrc.File{Name: rest, Data: f.Data}
	}
	return out
}

// wrap turns bpfsrc's refusals into header set refusals.
func wrap(err error) error {
	var ie *bpfsrc.InvalidError
	if errors.As(err, &ie) {
		return &InvalidError{Path: ie.Path, Reason: ie.Reason, Err: ie.Err}
	}
	return err
}
