package bpfsrc

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Collect builds a bundle from a local path: a *.bpf.c file (bundled with the
// local headers it includes, transitively, found beside it) or a directory
// holding exactly one *.bpf.c entry (or entry, relative to the directory).
//
// For a file, Collect scans the #include and #embed directives of the file
// and of every file it collects. A quoted name ("x.h") is looked up relative
// to the directory of the including file, then relative to the directory of
// the entry; a bracketed name (<x.h>) relative to the directory of the entry
// only. A name found there is collected; a name not found (vmlinux.h,
// bpf/bpf_helpers.h, linux/*.h: headers the farm provides) or an absolute
// name is skipped silently. Directives are found by a rough scan that skips
// comments and joins continued lines but evaluates no conditionals, so a
// header included under #if 0 is collected too. Cycles are fine. Symbolic
// links are followed and their targets bundled as regular files.
//
// The bundle root is the directory of the entry, or, if a header lies outside
// it (#include "../common.h"), the deepest directory holding every collected
// file, so that the relative names in the directives stay valid and the entry
// keeps its position relative to its headers: the entry may then be
// "prog/xdp.bpf.c" next to "common.h". The farm is expected to compile the
// entry in place, with its directory on the include path for <x.h> names.
//
// For a directory, Collect bundles every regular file under it whose name
// ends in ".c" or ".h", named relative to the directory, skipping hidden
// files and directories (a name starting with ".") and symbolic links. The
// directory must hold exactly one *.bpf.c file unless entry is given.
// entry must be empty when path is a file.
//
// Limits are enforced as files are read. Rule violations are reported as an
// *InvalidError.
func Collect(path, entry string, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	var b *Bundle
	switch {
	case fi.IsDir():
		b, err = collectDir(path, entry, lim)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("collect %s: not a regular file or directory", path)
	case entry != "":
		return nil, fmt.Errorf("collect %s: an entry file can only be named for a directory", path)
	default:
		b, err = collectFile(path, lim)
	}
	if err != nil {
		return nil, fmt.Errorf("collect %s: %w", path, err)
	}
	return b, nil
}

// collectFile collects the file at path and the local files it includes.
func collectFile(path string, lim Limits) (*Bundle, error) {
	entryPath, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	entryDir := filepath.Dir(entryPath)

	var (
		order    = []string{entryPath} // every file found, in discovery order
		contents = make(map[string][]byte)
		total    int64
	)
	seen := map[string]bool{entryPath: true}
	for i := 0; i < len(order); i++ {
		p := order[i]
		if i >= lim.MaxFiles {
			return nil, invalid(p, "bundle holds more than %d files", lim.MaxFiles)
		}
		data, err := readLocal(p, lim)
		if err != nil {
			return nil, err
		}
		total += int64(len(data))
		if total > lim.MaxTotalSize {
			return nil, invalid(p, "bundle exceeds %d bytes in total", lim.MaxTotalSize)
		}
		contents[p] = data
		for _, inc := range scanIncludes(data) {
			q, ok := resolveInclude(inc, filepath.Dir(p), entryDir)
			if ok && !seen[q] {
				seen[q] = true
				order = append(order, q)
			}
		}
	}

	root := entryDir
	for _, p := range order {
		for !within(root, p) {
			root = filepath.Dir(root)
		}
	}
	files := make([]File, 0, len(order))
	for _, p := range order {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: filepath.ToSlash(rel), Data: contents[p]})
	}
	return New(files[0].Name, files, lim)
}

// within reports whether the clean absolute path p lies under dir.
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolveInclude returns the local file an include directive names, if any.
func resolveInclude(inc include, dir, entryDir string) (string, bool) {
	if inc.name == "" || filepath.IsAbs(inc.name) {
		return "", false
	}
	dirs := []string{entryDir}
	if !inc.angled && dir != entryDir {
		dirs = []string{dir, entryDir}
	}
	for _, d := range dirs {
		p := filepath.Join(d, filepath.FromSlash(inc.name))
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, true
		}
	}
	return "", false
}

// collectDir collects the C sources and headers under dir.
func collectDir(dir, entry string, lim Limits) (*Bundle, error) {
	// WalkDir does not follow a symbolic link even as its root; the user
	// named this one, so resolve it.
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	var (
		files []File
		total int64
	)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !isSource(d.Name()) {
			return nil // directories, symbolic links, devices, other files
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if len(files) >= lim.MaxFiles {
			return invalid(name, "bundle holds more than %d files", lim.MaxFiles)
		}
		data, err := readLocal(p, lim)
		if err != nil {
			return err
		}
		total += int64(len(data))
		if total > lim.MaxTotalSize {
			return invalid(name, "bundle exceeds %d bytes in total", lim.MaxTotalSize)
		}
		files = append(files, File{Name: name, Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return New(filepath.ToSlash(entry), files, lim)
}

// isSource reports whether a file called name belongs in a directory bundle.
func isSource(name string) bool {
	return strings.HasSuffix(name, ".c") || strings.HasSuffix(name, ".h")
}

// readLocal reads the regular file at p, refusing it early if it is larger
// than lim allows.
func readLocal(p string, lim Limits) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", p)
	}
	if fi.Size() > lim.MaxFileSize {
		return nil, invalid(p, "file is %d bytes; the limit is %d", fi.Size(), lim.MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, lim.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > lim.MaxFileSize {
		return nil, invalid(p, "file is more than %d bytes; the limit is %d", lim.MaxFileSize, lim.MaxFileSize)
	}
	return data, nil
}

// include is the operand of an #include or #embed directive.
type include struct {
	name   string
	angled bool // <name> rather than "name"
}

// scanIncludes returns the #include and #embed directives of a C source, in
// order. It joins continued lines and skips comments but is otherwise rough:
// it does not evaluate conditionals or expand macros.
func scanIncludes(src []byte) []include {
	var incs []include
	for line := range bytes.SplitSeq(stripComments(joinContinuations(src)), []byte("\n")) {
		if inc, ok := parseDirective(string(line)); ok {
			incs = append(incs, inc)
		}
	}
	return incs
}

// joinContinuations removes backslash-newline pairs.
func joinContinuations(src []byte) []byte {
	if bytes.IndexByte(src, '\\') < 0 {
		return src
	}
	out := make([]byte, 0, len(src))
	for i := 0; i < len(src); i++ {
		if src[i] == '\\' {
			switch {
			case i+1 < len(src) && src[i+1] == '\n':
				i++
				continue
			case i+2 < len(src) && src[i+1] == '\r' && src[i+2] == '\n':
				i += 2
				continue
			}
		}
		out = append(out, src[i])
	}
	return out
}

// stripComments replaces each comment with a space, keeping the newlines of
// block comments so that lines stay lines. String and character literals,
// which end at the end of their line at the latest, are kept as they are.
func stripComments(src []byte) []byte {
	out := make([]byte, 0, len(src))
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			out = append(out, ' ')
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			out = append(out, ' ')
			i += 2
			for ; i < len(src) && !(src[i] == '*' && i+1 < len(src) && src[i+1] == '/'); i++ {
				if src[i] == '\n' {
					out = append(out, '\n')
				}
			}
			i++ // the '/' of "*/"
		case c == '"' || c == '\'':
			out = append(out, c)
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
				out = append(out, src[i])
				if src[i] == '\\' && i+1 < len(src) && src[i+1] != '\n' {
					i++
					out = append(out, src[i])
				} else if src[i] == c {
					break
				}
			}
		default:
			out = append(out, c)
		}
	}
	return out
}

// parseDirective parses one line as an #include or #embed directive.
func parseDirective(line string) (include, bool) {
	s := strings.TrimLeft(line, " \t\f\v\r")
	if !strings.HasPrefix(s, "#") {
		return include{}, false
	}
	s = strings.TrimLeft(s[1:], " \t\f\v\r")
	var rest string
	switch {
	case strings.HasPrefix(s, "include"):
		rest = s[len("include"):]
	case strings.HasPrefix(s, "embed"):
		rest = s[len("embed"):]
	default:
		return include{}, false
	}
	if rest == "" || isIdent(rest[0]) { // #include_next, #embedded, ...
		return include{}, false
	}
	rest = strings.TrimLeft(rest, " \t\f\v\r")
	if rest == "" {
		return include{}, false
	}
	var end byte
	switch rest[0] {
	case '"':
		end = '"'
	case '<':
		end = '>'
	default:
		return include{}, false // a macro
	}
	n := strings.IndexByte(rest[1:], end)
	if n <= 0 {
		return include{}, false
	}
	return include{name: rest[1 : 1+n], angled: end == '>'}, true
}

func isIdent(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
