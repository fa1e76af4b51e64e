package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/btf/kernel"
)

// KernelCacheEnv is the environment variable naming the directory where
// DebianKernel keeps kernel packages; the default is
// $HOME/.cache/bpfarm/kernels.
const KernelCacheEnv = "BPFARM_KERNEL_CACHE"

// aptTimeout bounds each apt command DebianKernel runs.
const aptTimeout = 10 * time.Minute

// KernelCacheDir returns the directory where DebianKernel keeps kernel
// packages: $BPFARM_KERNEL_CACHE, else $HOME/.cache/bpfarm/kernels.
func KernelCacheDir() (string, error) {
	if d := os.Getenv(KernelCacheEnv); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "bpfarm", "kernels"), nil
}

// DebianKernel returns the path of a Debian cloud kernel package for amd64
// of series, e.g. "6.1" (linux-image-6.1.0-N-cloud-amd64-unsigned) or
// "6.12" (linux-image-6.12.N+debM-cloud-amd64-unsigned), from
// KernelCacheDir. Without one there, it downloads the newest that apt
// knows with apt-get download (after apt-get update if apt knows none).
// Test binaries running at once share the cache safely: downloads happen
// under a lock and land under their final name by rename. If no package
// can be had, the test is skipped, or fails if Strict.
func DebianKernel(t testing.TB, series string) string {
	t.Helper()
	return DebianKernelArch(t, series, "amd64")
}

// DebianKernelArch is DebianKernel for the Debian architecture arch:
// amd64 or arm64 (the kernel names x86_64 and aarch64 are accepted too).
// Packages of a foreign architecture need it added to dpkg first
// (dpkg --add-architecture arm64; apt-get update), which make deps does.
func DebianKernelArch(t testing.TB, series, arch string) string {
	t.Helper()
	deb, err := DebianArch(arch)
	if err == nil {
		var p string
		if p, err = debianKernel(series, deb); err == nil {
			return p
		}
	}
	Require(t, "Debian "+series+" "+arch+" kernel package", err.Error())
	return ""
}

// DebianArch returns the Debian architecture name of arch: amd64 for
// amd64 and x86_64, arm64 for arm64 and aarch64.
func DebianArch(arch string) (string, error) {
	switch arch {
	case "amd64", "x86_64", "x86-64":
		return "amd64", nil
	case "arm64", "aarch64":
		return "arm64", nil
	}
	return "", fmt.Errorf("architecture %q: want amd64 (x86_64) or arm64 (aarch64)", arch)
}

// kernelPackage returns the pattern of the names of Debian cloud kernel
// packages of series for arch. Its first group is the kernel release.
func kernelPackage(series, arch string) *regexp.Regexp {
	return regexp.MustCompile(`^linux-image-(` + regexp.QuoteMeta(series) +
		`(?:\.0-\d+|\.\d+\+deb\d+)-cloud-` + regexp.QuoteMeta(arch) + `)-unsigned$`)
}

// debianKernel finds or downloads a package as DebianKernel describes.
func debianKernel(series, arch string) (string, error) {
	if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(series) {
		return "", fmt.Errorf("series %q is not MAJOR.MINOR", series)
	}
	dir, err := KernelCacheDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	pkg := kernelPackage(series, arch)
	if p, err := cachedKernel(dir, pkg, arch); p != "" || err != nil {
		return p, err
	}

	unlock, err := lockFile(filepath.Join(dir, ".lock"))
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer unlock()
	// Another process may have downloaded it while this one waited.
	if p, err := cachedKernel(dir, pkg, arch); p != "" || err != nil {
		return p, err
	}

	names, err := aptKernelPackages(pkg, series, arch)
	if err != nil {
		return "", err
	}
	var errs []error
	for _, name := range names[:min(len(names), 3)] {
		p, err := aptDownload(dir, name, arch)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// cachedKernel returns the newest package in dir whose name matches pkg,
// or "".
func cachedKernel(dir string, pkg *regexp.Regexp, arch string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	file := regexp.MustCompile(`^([^_]+)_[^_]+_` + regexp.QuoteMeta(arch) + `\.deb$`)
	var best, bestRelease string
	for _, e := range entries {
		m := file.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		p := pkg.FindStringSubmatch(m[1])
		if p == nil {
			continue
		}
		if best == "" || kernel.CompareRelease(p[1], bestRelease) > 0 {
			best, bestRelease = filepath.Join(dir, e.Name()), p[1]
		}
	}
	return best, nil
}

// aptKernelPackages returns the names of the packages that apt knows and
// that match pkg, newest first. If apt knows none, it runs apt-get update
// once and looks again.
func aptKernelPackages(pkg *regexp.Regexp, series, arch string) ([]string, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return nil, fmt.Errorf("no Debian kernel %s package for %s cached, and no apt-cache to find one: %w", series, arch, err)
	}
	search := func() ([]string, error) {
		// apt-cache takes a POSIX regular expression: a looser one.
		re := "^linux-image-" + strings.ReplaceAll(series, ".", `\.`) + ".*-cloud-" + arch + "-unsigned$"
		out, err := runApt("", "apt-cache", "search", "--names-only", re)
		if err != nil {
			return nil, err
		}
		var names []string
		for line := range strings.Lines(string(out)) {
			name, _, _ := strings.Cut(line, " ")
			if pkg.MatchString(name) {
				names = append(names, name)
			}
		}
		slices.SortFunc(names, func(a, b string) int {
			return kernel.CompareRelease(pkg.FindStringSubmatch(b)[1], pkg.FindStringSubmatch(a)[1])
		})
		return names, nil
	}
	names, err := search()
	if err == nil && len(names) == 0 && !dpkgKnowsArch(arch) {
		return nil, fmt.Errorf("dpkg does not know the architecture %s: run dpkg --add-architecture %s && apt-get update (make deps does)", arch, arch)
	}
	if err == nil && len(names) == 0 {
		if _, err = runApt("", "apt-get", "update"); err == nil {
			names, err = search()
		}
	}
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("apt knows no package matching %s", pkg)
	}
	return names, nil
}

// dpkgKnowsArch reports whether arch is dpkg's native architecture or one
// of its foreign ones.
func dpkgKnowsArch(arch string) bool {
	native, err := runApt("", "dpkg", "--print-architecture")
	if err != nil {
		return false
	}
	if strings.TrimSpace(string(native)) == arch {
		return true
	}
	foreign, err := runApt("", "dpkg", "--print-foreign-architectures")
	if err != nil {
		return false
	}
	return slices.Contains(strings.Fields(string(foreign)), arch)
}

// aptDownload downloads package name into dir, through a temporary
// directory so that the package appears whole under its final name.
func aptDownload(dir, name, arch string) (string, error) {
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := runApt(tmp, "apt-get", "download", name+":"+arch); err != nil {
		return "", err
	}
	debs, err := filepath.Glob(filepath.Join(tmp, name+"_*.deb"))
	if err != nil || len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: got %q, want one .deb", name, debs)
	}
	dst := filepath.Join(dir, filepath.Base(debs[0]))
	if err := os.Rename(debs[0], dst); err != nil {
		return "", err
	}
	return dst, nil
}

// runApt runs an apt command in dir and returns its output; its error
// includes the end of the output.
func runApt(dir, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), aptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = "..." + msg[len(msg)-500:]
		}
		return nil, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return out, nil
}
