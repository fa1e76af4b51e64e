package kernel

import (
	"fmt"
	"strconv"
	"strings"
)

// Release is a parsed kernel release (uname -r), e.g.
// 6.1.0-50-cloud-amd64, 5.4.0-1019-aws, 4.18.0-305.el8.x86_64,
// 6.12.117+deb12-cloud-amd64, 5.15.0-1034-azure.
type Release struct {
	Major, Minor, Patch int
	// Rest is everything after major.minor.patch, e.g. "-50-cloud-amd64".
	Rest string
}

// maxNumberLen bounds the digits of a version number, so that it fits an
// int everywhere.
const maxNumberLen = 9

// ParseRelease parses a kernel release: MAJOR.MINOR[.PATCH] followed by
// anything without white space or control characters. A missing patch
// level is 0.
func ParseRelease(s string) (Release, error) {
	if s == "" {
		return Release{}, fmt.Errorf("kernel release is empty")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return Release{}, fmt.Errorf("kernel release %q has character %q at %d", s, rune(c), i)
		}
	}
	var r Release
	rest := s
	nums := []*int{&r.Major, &r.Minor, &r.Patch}
	for i, p := range nums {
		if i > 0 {
			if !strings.HasPrefix(rest, ".") || len(rest) < 2 || !isDigit(rest[1]) {
				if i == 2 { // no patch level: 6.8-rc1
					break
				}
				return Release{}, fmt.Errorf("kernel release %q: want MAJOR.MINOR.PATCH at the start", s)
			}
			rest = rest[1:]
		}
		n := 0
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 0 {
			return Release{}, fmt.Errorf("kernel release %q: want MAJOR.MINOR.PATCH at the start", s)
		}
		if n > maxNumberLen {
			return Release{}, fmt.Errorf("kernel release %q: version number %q is too large", s, rest[:n])
		}
		*p, _ = strconv.Atoi(rest[:n])
		rest = rest[n:]
	}
	r.Rest = rest
	return r, nil
}

// String returns the release as MAJOR.MINOR.PATCH followed by Rest.
func (r Release) String() string {
	return fmt.Sprintf("%d.%d.%d%s", r.Major, r.Minor, r.Patch, r.Rest)
}

// VersionCode returns KERNEL_VERSION(Major, Minor, Patch).
func (r Release) VersionCode() uint32 {
	return VersionCode(r.Major, r.Minor, r.Patch)
}

// CompareRelease compares two kernel releases and returns -1, 0 or +1. It
// is a total order: releases are ordered by numeric major.minor.patch, then
// by a numeric-aware comparison of the rest, where runs of digits compare
// as numbers (so -50 comes after -9) and a number comes after anything else
// in the same place (so 305.1.1.el8_4 comes after 305.el8, as in RPM).
// Releases that ParseRelease rejects come after all others, in lexical
// order. Releases equal by these rules are ordered lexically, so that 0 is
// returned only for a == b.
func CompareRelease(a, b string) int {
	ra, errA := ParseRelease(a)
	rb, errB := ParseRelease(b)
	switch {
	case errA != nil && errB != nil:
		return strings.Compare(a, b)
	case errA != nil:
		return 1
	case errB != nil:
		return -1
	}
	for _, c := range [][2]int{{ra.Major, rb.Major}, {ra.Minor, rb.Minor}, {ra.Patch, rb.Patch}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	if c := compareRest(ra.Rest, rb.Rest); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// compareRest compares two strings token by token, where a token is a run
// of digits, a run of letters, or any other single byte.
func compareRest(a, b string) int {
	for a != "" && b != "" {
		ta, tb := token(a), token(b)
		a, b = a[len(ta):], b[len(tb):]
		da, db := isDigit(ta[0]), isDigit(tb[0])
		switch {
		case da && db:
			if c := compareNumbers(ta, tb); c != 0 {
				return c
			}
		case da: // a number is newer than anything else
			return 1
		case db:
			return -1
		default:
			if c := strings.Compare(ta, tb); c != 0 {
				return c
			}
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	}
	return 1
}

// token returns the leading token of a non-empty s: a run of digits, a run
// of letters, or one other byte.
func token(s string) string {
	var class func(byte) bool
	switch {
	case isDigit(s[0]):
		class = isDigit
	case isLetter(s[0]):
		class = isLetter
	default:
		return s[:1]
	}
	i := 1
	for i < len(s) && class(s[i]) {
		i++
	}
	return s[:i]
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// compareNumbers compares two strings of decimal digits by value, of any
// length.
func compareNumbers(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// VersionCode returns KERNEL_VERSION(major, minor, patch) as the kernel
// computes it: (major << 16) + (minor << 8) + patch, with patch clamped to
// 255 (since Linux 4.9.256 and 4.14.256 overflowed it). Negative numbers
// count as 0.
func VersionCode(major, minor, patch int) uint32 {
	major, minor, patch = max(major, 0), max(minor, 0), max(patch, 0)
	return uint32(major)<<16 + uint32(minor)<<8 + uint32(min(patch, 255))
}
