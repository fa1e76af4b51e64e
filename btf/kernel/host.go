package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// VmlinuxBTF is where a kernel built with CONFIG_DEBUG_INFO_BTF exposes its
// BTF; modules' split BTF is beside it, named by module.
const VmlinuxBTF = "/sys/kernel/btf/vmlinux"

// HostInfo describes the running machine.
type HostInfo struct {
	// ID is the kernel's ID: distro and version from os-release (btfhub
	// conventions, e.g. debian/12, ubuntu/22.04, centos/8, amzn/2), arch
	// and release from uname.
	ID ID
	// Build is the build string, uname -v.
	Build string
	// HasBTF reports whether the kernel exposes its BTF at BTFPath.
	HasBTF bool
	// BTFPath is VmlinuxBTF when HasBTF, else empty.
	BTFPath string
}

// Utsname is the part of uname(2) that HostFrom needs.
type Utsname struct {
	Release string // uname -r, e.g. 6.1.0-50-cloud-amd64
	Version string // uname -v, e.g. #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)
	Machine string // uname -m, e.g. x86_64 or aarch64
}

// osReleasePaths are where Host reads os-release(5), in order.
var osReleasePaths = []string{"/etc/os-release", "/usr/lib/os-release"}

// HostFrom describes a host from the contents of its os-release file and
// its uname. It does not look at the file system: HasBTF and BTFPath are
// left unset (Host sets them).
func HostFrom(osRelease []byte, uts Utsname) (HostInfo, error) {
	vars, err := ParseOSRelease(osRelease)
	if err != nil {
		return HostInfo{}, err
	}
	distro := strings.ToLower(vars["ID"])
	if distro == "" {
		return HostInfo{}, errors.New("os-release: no ID")
	}
	version := vars["VERSION_ID"]
	if version == "" {
		// Rolling releases (Debian sid, Arch) have none.
		version = vars["VERSION_CODENAME"]
	}
	if version == "" {
		return HostInfo{}, fmt.Errorf("os-release: ID=%s has neither VERSION_ID nor VERSION_CODENAME", distro)
	}
	if majorOnly[distro] {
		version, _, _ = strings.Cut(version, ".")
	}
	arch, err := NormalizeArch(uts.Machine)
	if err != nil {
		return HostInfo{}, fmt.Errorf("uname machine: %w", err)
	}
	id := ID{Distro: distro, Version: version, Arch: arch, Release: uts.Release}
	if err := id.Validate(); err != nil {
		return HostInfo{}, fmt.Errorf("host: %w", err)
	}
	return HostInfo{ID: id, Build: uts.Version}, nil
}

// majorOnly lists the distributions whose kernels btfhub-archive files by
// major version only (rhel/8, not rhel/8.4), unlike ubuntu/22.04.
var majorOnly = map[string]bool{
	"almalinux": true,
	"amzn":      true,
	"centos":    true,
	"debian":    true,
	"fedora":    true,
	"ol":        true,
	"rhel":      true,
	"rocky":     true,
}

// ParseOSRelease parses an os-release(5) file into its variables, with
// quotes and backslash escapes removed.
func ParseOSRelease(data []byte) (map[string]string, error) {
	vars := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("os-release line %d: want KEY=VALUE, got %.40q", line, text)
		}
		v, err := unquote(value)
		if err != nil {
			return nil, fmt.Errorf("os-release line %d: %s: %w", line, key, err)
		}
		vars[key] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("os-release: %w", err)
	}
	return vars, nil
}

// unquote removes shell-style quotes from an os-release value.
func unquote(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	q := v[0]
	if q != '"' && q != '\'' {
		return v, nil
	}
	if len(v) < 2 || v[len(v)-1] != q {
		return "", fmt.Errorf("unterminated quote in %.40s", v)
	}
	v = v[1 : len(v)-1]
	if q == '\'' {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String(), nil
}
