package compile

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// toolFiles is what a sandbox must contain for one binary to run: the
// directory trees and files to bind read-only at their own paths, and the
// symbolic links (path → target) on the way to them.
type toolFiles struct {
	trees    []string          // directories bound whole
	files    []string          // real paths of files bound one by one
	symlinks map[string]string // link path → link target, as on the host
}

// bwrapArgs returns the bubblewrap arguments that recreate t.
func (t *toolFiles) bwrapArgs() []string {
	var args []string
	links := make([]string, 0, len(t.symlinks))
	for l := range t.symlinks {
		links = append(links, l)
	}
	sort.Strings(links)
	for _, l := range links {
		args = append(args, "--symlink", t.symlinks[l], l)
	}
	for _, d := range t.trees {
		args = append(args, "--ro-bind", d, d)
	}
	for _, f := range t.files {
		args = append(args, "--ro-bind", f, f)
	}
	return args
}

// paths returns every host path t exposes, longest first.
func (t *toolFiles) paths() []string {
	ps := append(append([]string(nil), t.trees...), t.files...)
	sort.Slice(ps, func(i, j int) bool { return len(ps[i]) > len(ps[j]) })
	return ps
}

// clangFiles computes the files clang needs in the sandbox: its own
// installation tree (e.g. /usr/lib/llvm-19, which holds the resource
// directory), the closure of shared libraries it links against, read from
// the ELF DT_NEEDED entries as ld.so resolves them, and the dynamic loader.
func clangFiles(clang, resourceDir string) (*toolFiles, error) {
	t := &toolFiles{symlinks: make(map[string]string)}

	binDir := filepath.Dir(clang)
	if filepath.Base(binDir) == "bin" {
		root := filepath.Dir(binDir)
		switch root {
		case "/", "/usr", "/usr/local":
			t.files = append(t.files, clang)
		default:
			t.trees = append(t.trees, root)
		}
	} else {
		t.files = append(t.files, clang)
	}
	if resourceDir != "" {
		if err := t.addPath(resourceDir); err != nil {
			return nil, fmt.Errorf("clang resource directory: %w", err)
		}
	}

	r := &libResolver{t: t, seen: make(map[string]bool), defaults: defaultLibDirs()}
	if err := r.addELF(clang, true); err != nil {
		return nil, err
	}
	sort.Strings(t.files)
	return t, nil
}

// covered reports whether host path p lies inside a tree bound whole.
func (t *toolFiles) covered(p string) bool {
	for _, d := range t.trees {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// addPath makes path p resolve in the sandbox as on the host: every
// symbolic link met on the way is recreated (unless it lies in a bound
// tree, where it exists already) and the final file is bound.
func (t *toolFiles) addPath(p string) error {
	orig := p
	for hops := 0; ; hops++ {
		if hops > 40 {
			return fmt.Errorf("%s: too many symbolic links", orig)
		}
		p = filepath.Clean(p)
		link, target, rest, err := firstSymlink(p)
		if err != nil {
			return fmt.Errorf("%s: %w", orig, err)
		}
		if link == "" {
			break
		}
		if !t.covered(link) {
			if old, ok := t.symlinks[link]; ok && old != target {
				return fmt.Errorf("%s: conflicting symbolic links", link)
			}
			t.symlinks[link] = target
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		p = filepath.Join(target, rest)
	}
	info, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", orig, err)
	}
	if t.covered(p) {
		return nil
	}
	if info.IsDir() {
		t.trees = append(t.trees, p)
		return nil
	}
	for _, f := range t.files {
		if f == p {
			return nil
		}
	}
	t.files = append(t.files, p)
	return nil
}

// firstSymlink returns the first component of the absolute path p that is a
// symbolic link, its target and the rest of p after it; link is "" if
// there is none.
func firstSymlink(p string) (link, target, rest string, err error) {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := ""
	for i, part := range parts {
		cur += "/" + part
		info, err := os.Lstat(cur)
		if err != nil {
			return "", "", "", err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(cur)
			if err != nil {
				return "", "", "", err
			}
			return cur, target, strings.Join(parts[i+1:], "/"), nil
		}
	}
	return "", "", "", nil
}

// libResolver follows DT_NEEDED entries the way ld.so does.
type libResolver struct {
	t        *toolFiles
	seen     map[string]bool
	defaults []string
	machine  elf.Machine
	class    elf.Class
}

func (r *libResolver) addELF(path string, main bool) error {
	if r.seen[path] {
		return nil
	}
	r.seen[path] = true

	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if main {
		r.machine, r.class = f.Machine, f.Class
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			buf := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(buf, 0); err != nil {
				return fmt.Errorf("read %s: interpreter: %w", path, err)
			}
			interp := strings.TrimRight(string(buf), "\x00")
			if err := r.t.addPath(interp); err != nil {
				return fmt.Errorf("dynamic loader: %w", err)
			}
		}
	}

	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	rpath, _ := f.DynString(elf.DT_RPATH)
	origin := filepath.Dir(path)
	var dirs []string
	expand := func(list []string) {
		for _, l := range list {
			for _, d := range strings.Split(l, ":") {
				d = strings.ReplaceAll(d, "${ORIGIN}", origin)
				d = strings.ReplaceAll(d, "$ORIGIN", origin)
				if d != "" {
					dirs = append(dirs, d)
				}
			}
		}
	}
	if len(runpath) == 0 {
		expand(rpath)
	}
	expand(runpath)
	dirs = append(dirs, r.defaults...)

	for _, lib := range needed {
		found := ""
		if strings.Contains(lib, "/") {
			found = lib
		} else {
			for _, d := range dirs {
				cand := filepath.Join(d, lib)
				if r.matches(cand) {
					found = cand
					break
				}
			}
		}
		if found == "" {
			return fmt.Errorf("%s: shared library %s not found", path, lib)
		}
		if err := r.t.addPath(found); err != nil {
			return fmt.Errorf("shared library: %w", err)
		}
		if err := r.addELF(found, false); err != nil {
			return err
		}
	}
	return nil
}

// matches reports whether p is an ELF object for the main binary's machine.
func (r *libResolver) matches(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Machine == r.machine && f.Class == r.class
}

// defaultLibDirs returns the directories ld.so searches when RUNPATH does not
// name a library: those of /etc/ld.so.conf and the built-in ones.
func defaultLibDirs() []string {
	var dirs []string
	readLdSoConf("/etc/ld.so.conf", &dirs, 0)
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	if triplet != "" {
		dirs = append(dirs, "/lib/"+triplet, "/usr/lib/"+triplet)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

func readLdSoConf(path string, dirs *[]string, depth int) {
	if depth > 4 {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line, _, _ := strings.Cut(s.Text(), "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "include "):
			pattern := strings.TrimSpace(strings.TrimPrefix(line, "include "))
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join(filepath.Dir(path), pattern)
			}
			matches, _ := filepath.Glob(pattern)
			sort.Strings(matches)
			for _, m := range matches {
				readLdSoConf(m, dirs, depth+1)
			}
		case filepath.IsAbs(line):
			*dirs = append(*dirs, line)
		}
	}
}
