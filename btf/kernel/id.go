// Package kernel names and describes Linux kernels: the ID under which a
// kernel's BTF is archived (the btfhub-archive layout), kernel releases and
// their order, the kernel's version banner, and the running host.
//
// It is pure Go and has no dependencies outside the standard library and
// golang.org/x/sys, so that the static agent can use it.
package kernel

import (
	"errors"
	"fmt"
	"strings"
)

// ID names a kernel as DISTRO/VERSION/ARCH/RELEASE, the btfhub-archive
// layout, e.g. debian/12/x86_64/6.1.0-50-cloud-amd64.
//
// Every part is a single path element, so that an ID can be used as a
// relative path as is.
type ID struct {
	Distro  string // os-release ID, e.g. debian, ubuntu, centos, amzn
	Version string // distribution version, e.g. 12, 22.04, 8, 2
	Arch    string // x86_64 or arm64
	Release string // uname -r, e.g. 6.1.0-50-cloud-amd64
}

// Supported architectures, as named in IDs.
const (
	ArchX86_64 = "x86_64"
	ArchARM64  = "arm64"
)

// maxPartLen bounds each part of an ID: a path element on common file
// systems is at most 255 bytes.
const maxPartLen = 255

// ParseID parses s in the form DISTRO/VERSION/ARCH/RELEASE and returns it
// in its canonical form (see Canonical): the architecture may be spelled
// as any alias NormalizeArch knows, e.g. aarch64 for arm64 or amd64 for
// x86_64. Otherwise it is strict: there must be exactly four non-empty
// parts, and parts may only hold the characters A-Z a-z 0-9 . _ + ~ - and
// never "..".
func ParseID(s string) (ID, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 4 {
		return ID{}, fmt.Errorf("kernel ID %q: want DISTRO/VERSION/ARCH/RELEASE, got %d part(s)", s, len(parts))
	}
	id := ID{Distro: parts[0], Version: parts[1], Arch: parts[2], Release: parts[3]}.Canonical()
	if err := id.check(); err != nil {
		return ID{}, fmt.Errorf("kernel ID %q: %w", s, err)
	}
	return id, nil
}

// Canonical returns the ID with its architecture spelled as IDs spell it
// (x86_64 or arm64) when it is an alias NormalizeArch knows (amd64,
// aarch64, ...). Other parts, and an unknown architecture, are left as
// they are for Validate to judge. Every ID read from outside (flags, file
// paths, API parameters, hosts) goes through it, so that the archive
// stores and prints one spelling.
func (id ID) Canonical() ID {
	if id.Arch == ArchX86_64 || id.Arch == ArchARM64 {
		return id
	}
	if arch, err := NormalizeArch(id.Arch); err == nil {
		id.Arch = arch
	}
	return id
}

// String returns the ID as DISTRO/VERSION/ARCH/RELEASE.
func (id ID) String() string {
	return id.Distro + "/" + id.Version + "/" + id.Arch + "/" + id.Release
}

// Validate reports whether the ID is canonical and one that ParseID
// accepts: an alias of an architecture (aarch64) is refused here, naming
// the canonical one; call Canonical first to accept it.
func (id ID) Validate() error {
	if err := id.check(); err != nil {
		return fmt.Errorf("kernel ID %q: %w", id.String(), err)
	}
	return nil
}

func (id ID) check() error {
	for _, p := range []struct{ name, value string }{
		{"distro", id.Distro},
		{"version", id.Version},
		{"arch", id.Arch},
		{"release", id.Release},
	} {
		if err := checkPart(p.value); err != nil {
			return fmt.Errorf("%s %w", p.name, err)
		}
	}
	if id.Arch != ArchX86_64 && id.Arch != ArchARM64 {
		if norm, err := NormalizeArch(id.Arch); err == nil {
			return fmt.Errorf("arch %q is not %s or %s (did you mean %s?)", id.Arch, ArchX86_64, ArchARM64, norm)
		}
		return fmt.Errorf("arch %q is not %s or %s", id.Arch, ArchX86_64, ArchARM64)
	}
	return nil
}

// checkPart checks one part of an ID; its error is worded to follow the
// part's name.
func checkPart(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > maxPartLen:
		return fmt.Errorf("is longer than %d bytes", maxPartLen)
	case strings.Contains(s, ".."):
		return fmt.Errorf("%q contains \"..\"", s)
	case s == ".":
		return errors.New(`is "."`)
	}
	for i := 0; i < len(s); i++ {
		if !safeChar(s[i]) {
			return fmt.Errorf("%q has character %q at %d; allowed are A-Z a-z 0-9 . _ + ~ -", s, rune(s[i]), i)
		}
	}
	return nil
}

func safeChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("._+~-", c) >= 0
}

// NormalizeArch returns the ID spelling of an architecture name: amd64,
// x86_64 and x86-64 are x86_64; arm64 and aarch64 are arm64. Other
// architectures are not supported.
func NormalizeArch(s string) (string, error) {
	switch strings.ToLower(s) {
	case "x86_64", "amd64", "x86-64", "x64":
		return ArchX86_64, nil
	case "arm64", "aarch64":
		return ArchARM64, nil
	}
	return "", fmt.Errorf("unsupported architecture %q: want x86_64 (amd64) or arm64 (aarch64)", s)
}
