package testenv

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/bpfarm/bpfarm/btf/kernel"
)

// DebianPackage is a Debian linux-image-*-unsigned package that apt knows.
type DebianPackage struct {
	Name    string // e.g. linux-image-6.1.0-57-cloud-amd64-unsigned
	Arch    string // Debian architecture: amd64, arm64
	Release string // kernel release, e.g. 6.1.0-57-cloud-amd64
	Series  string // MAJOR.MINOR, e.g. 6.1
	Flavour string // generic, cloud or rt
	Size    int64  // download size in bytes (apt's Size field)
}

// debianImage matches the names of Debian's unsigned kernel image
// packages: release, then series, flavour (empty for generic) and arch.
var debianImage = regexp.MustCompile(`^linux-image-((\d+\.\d+)(?:\.0-\d+|\.\d+\+deb\d+)-(?:(cloud|rt)-)?(amd64|arm64))-unsigned$`)

// DebianKernelPackages returns the linux-image-*-unsigned packages of the
// given series (e.g. "6.1", "6.12") for the Debian architectures arches
// that apt knows, newest first within each (arch, series, flavour).
func DebianKernelPackages(series, arches []string) ([]DebianPackage, error) {
	if len(series) == 0 || len(arches) == 0 {
		return nil, nil
	}
	// apt-cache search ANDs its patterns: one loose pattern, then the
	// exact one here.
	out, err := runApt("", "apt-cache", "search", "--names-only", "^linux-image-.*-unsigned$")
	if err != nil {
		return nil, err
	}
	var pkgs []DebianPackage
	seen := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		name, _, _ := strings.Cut(line, " ")
		m := debianImage.FindStringSubmatch(name)
		if m == nil || seen[name] || !slices.Contains(series, m[2]) || !slices.Contains(arches, m[4]) {
			continue
		}
		seen[name] = true
		p := DebianPackage{Name: name, Release: m[1], Series: m[2], Flavour: cmp.Or(m[3], "generic"), Arch: m[4]}
		pkgs = append(pkgs, p)
	}
	if err := aptSizes(pkgs); err != nil {
		return nil, err
	}
	slices.SortFunc(pkgs, func(a, b DebianPackage) int {
		return cmp.Or(cmp.Compare(a.Arch, b.Arch), kernel.CompareRelease(a.Series+".0", b.Series+".0"),
			cmp.Compare(a.Flavour, b.Flavour), kernel.CompareRelease(b.Release, a.Release))
	})
	return pkgs, nil
}

// aptSizes fills the packages' download sizes from apt-cache show.
func aptSizes(pkgs []DebianPackage) error {
	if len(pkgs) == 0 {
		return nil
	}
	args := []string{"show", "--no-all-versions"}
	for _, p := range pkgs {
		args = append(args, p.Name+":"+p.Arch)
	}
	out, err := runApt("", "apt-cache", args...)
	if err != nil {
		return err
	}
	sizes := map[string]int64{}
	var name, arch string
	for line := range strings.Lines(string(out)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		switch k {
		case "Package":
			name = v
		case "Architecture":
			arch = v
		case "Size":
			n, _ := strconv.ParseInt(v, 10, 64)
			sizes[name+":"+arch] = n
		}
	}
	for i := range pkgs {
		pkgs[i].Size = sizes[pkgs[i].Name+":"+pkgs[i].Arch]
	}
	return nil
}

// FetchDebianKernels returns the paths of the packages in KernelCacheDir,
// in the order of pkgs, downloading the ones not there with at most
// parallel apt-get downloads at once. Downloaded reports the bytes
// downloaded by this call. progress, when set, is called after each
// package (from any goroutine, one call at a time).
func FetchDebianKernels(pkgs []DebianPackage, parallel int, progress func(p DebianPackage, path string, cached bool, err error)) (paths []string, downloaded int64, err error) {
	dir, err := KernelCacheDir()
	if err != nil {
		return nil, 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	paths = make([]string, len(pkgs))
	errs := make([]error, len(pkgs))
	var mu sync.Mutex
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, p := range pkgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			path, cached, err := fetchDebianKernel(dir, p)
			paths[i], errs[i] = path, err
			mu.Lock()
			defer mu.Unlock()
			if err == nil && !cached {
				if st, e := os.Stat(path); e == nil {
					downloaded += st.Size()
				}
			}
			if progress != nil {
				progress(p, path, cached, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, downloaded, err
	}
	return paths, downloaded, nil
}

// fetchDebianKernel finds package p in dir or downloads it, under a lock
// of its own (so that other packages download at the same time).
func fetchDebianKernel(dir string, p DebianPackage) (string, bool, error) {
	cached := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, globEscape(p.Name)+"_*_"+p.Arch+".deb"))
		if len(m) == 0 {
			return ""
		}
		slices.Sort(m)
		return m[len(m)-1]
	}
	if c := cached(); c != "" {
		return c, true, nil
	}
	unlock, err := lockFile(filepath.Join(dir, ".lock-"+p.Name+"-"+p.Arch))
	if err != nil {
		return "", false, fmt.Errorf("lock %s: %w", p.Name, err)
	}
	defer unlock()
	if c := cached(); c != "" {
		return c, true, nil
	}
	path, err := aptDownload(dir, p.Name, p.Arch)
	return path, false, err
}

// globEscape escapes the glob metacharacters of s (package names may hold
// a '+').
func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}
