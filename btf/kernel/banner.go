package kernel

import (
	"fmt"
	"regexp"
	"strings"
)

// BannerPrefix starts the kernel's linux_banner, as in /proc/version.
const BannerPrefix = "Linux version "

// Banner is what the kernel's linux_banner tells, e.g.
//
//	Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)
type Banner struct {
	// Release is the kernel release (uname -r), e.g. 6.1.0-50-cloud-amd64.
	Release string
	// Build is the build string (uname -v), e.g.
	// "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)".
	Build string
	// Version is the real upstream version when the build string names it
	// (Debian: 6.1.176 from "Debian 6.1.176-1"), else parsed from Release.
	Version Release
}

// debianVersion finds the package version in a Debian build string, as
// libbpf does to find the real LINUX_VERSION_CODE of Debian kernels.
var debianVersion = regexp.MustCompile(`\bDebian (\d+\.\d+\.\d+\S*)`)

// ParseBanner parses a linux_banner: "Linux version RELEASE (USER@HOST)
// (COMPILER) BUILD". Trailing white space and NUL bytes are ignored.
func ParseBanner(s string) (Banner, error) {
	s = strings.TrimRight(s, "\x00\n\r\t ")
	if !strings.HasPrefix(s, BannerPrefix) {
		return Banner{}, fmt.Errorf("kernel banner %.60q: does not start with %q", s, BannerPrefix)
	}
	if i := strings.IndexAny(s, "\x00\n"); i >= 0 {
		return Banner{}, fmt.Errorf("kernel banner %.60q: has more than one line", s)
	}
	rest := s[len(BannerPrefix):]
	release, rest, _ := strings.Cut(rest, " ")
	r, err := ParseRelease(release)
	if err != nil {
		return Banner{}, fmt.Errorf("kernel banner %.60q: %w", s, err)
	}
	// Skip the parenthesized groups (builder, compiler), which may nest.
	rest = strings.TrimLeft(rest, " ")
	for strings.HasPrefix(rest, "(") {
		end := closingParen(rest)
		if end < 0 {
			return Banner{}, fmt.Errorf("kernel banner %.60q: unbalanced parentheses", s)
		}
		rest = strings.TrimLeft(rest[end+1:], " ")
	}
	b := Banner{Release: release, Build: rest, Version: r}
	if m := debianVersion.FindStringSubmatch(rest); m != nil {
		if v, err := ParseRelease(m[1]); err == nil {
			b.Version = v
		}
	}
	return b, nil
}

// closingParen returns the index of the parenthesis closing the one that
// starts s, or -1.
func closingParen(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// String returns the banner as "Linux version RELEASE BUILD"; the builder
// and compiler are not kept.
func (b Banner) String() string {
	return BannerPrefix + b.Release + " " + b.Build
}

// VersionCode returns the LINUX_VERSION_CODE of the kernel: that of the
// real upstream version when known (Debian 6.1.176 gives
// KERNEL_VERSION(6, 1, 176)), else that of the release.
func (b Banner) VersionCode() uint32 {
	return b.Version.VersionCode()
}
