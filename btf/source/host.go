package source

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bpfarm/bpfarm/btf/kernel"
)

// Host paths.
const (
	procConfig  = "/proc/config.gz"
	procVersion = "/proc/version"
	bootDir     = "/boot"
)

// Host reads the BTF of the running kernel from /sys/kernel/btf/vmlinux
// and its modules' from /sys/kernel/btf/MODULE, its ID from kernel.Host,
// its banner from /proc/version, and its config from /proc/config.gz or
// /boot/config-RELEASE if readable. Without kernel BTF it fails.
func Host(opts Options) (*Kernel, error) {
	h, err := kernel.Host()
	if err != nil {
		return nil, err
	}
	if !h.HasBTF {
		return nil, fmt.Errorf("host kernel %s has no BTF at %s (built without CONFIG_DEBUG_INFO_BTF?)", h.ID.Release, kernel.VmlinuxBTF)
	}
	k, err := hostBTF(filepath.Dir(h.BTFPath), opts)
	if err != nil {
		return nil, err
	}
	k.ID, k.Build, k.Source = h.ID, h.Build, "host"
	if b, err := os.ReadFile(procVersion); err == nil {
		if banner, err := kernel.ParseBanner(string(b)); err == nil {
			k.Banner = &banner
		}
	}
	k.Config = hostConfig(h.ID.Release)
	return k, nil
}

// hostBTF reads dir/vmlinux and the modules' split BTF beside it.
func hostBTF(dir string, opts Options) (*Kernel, error) {
	vmlinux := filepath.Join(dir, "vmlinux")
	raw, err := readFileLimited(vmlinux, opts.maxBTF())
	if err != nil {
		return nil, err
	}
	raw, base, err := validateBTF(raw, "", nil)
	if err != nil {
		return nil, &FormatError{Path: vmlinux, Err: err}
	}
	k := &Kernel{BTF: raw}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() == "vmlinux" || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		mod, err := readFileLimited(p, opts.maxBTF())
		if errors.Is(err, fs.ErrNotExist) {
			continue // unloaded meanwhile
		}
		if err != nil {
			return nil, err
		}
		mod, _, err = validateBTF(mod, "module "+e.Name(), base)
		if err != nil {
			return nil, &FormatError{Path: p, Err: err}
		}
		k.Modules = append(k.Modules, Module{Name: e.Name(), BTF: mod})
	}
	slices.SortFunc(k.Modules, func(a, b Module) int { return strings.Compare(a.Name, b.Name) })
	return k, nil
}

// readFileLimited reads a file of at most max bytes. Files in sysfs have no
// useful size, so it reads until EOF.
func readFileLimited(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := readLimited(f, max, p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

// hostConfig returns the running kernel's config, or nil if it cannot be
// read.
func hostConfig(release string) []byte {
	if b, err := os.ReadFile(procConfig); err == nil {
		if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			if cfg, err := readLimited(zr, maxConfigSize, procConfig); err == nil {
				return cfg
			}
		}
	}
	if cfg, err := readFileLimited(filepath.Join(bootDir, "config-"+release), maxConfigSize); err == nil {
		return cfg
	}
	return nil
}
