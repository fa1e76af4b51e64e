package compile

import (
	"fmt"
	"strings"
)

// allowedStds are the C dialects a user may select with -std=.
var allowedStds = map[string]bool{
	"c99": true, "c11": true, "c17": true, "c2x": true, "c23": true,
	"gnu99": true, "gnu11": true, "gnu17": true, "gnu2x": true, "gnu23": true,
}

const notAllowed = "not allowed: only -D, -U, -W, -std= and -O1..-O3 may be given"

// ValidateFlags checks the compiler flags a user asked for against the
// allowlist: -DNAME, -DNAME=VALUE, -UNAME, -W<warning>, -std=<c dialect>,
// -O1, -O2, -O3 and -g (a no-op: debug info is always on).
//
// Anything else is refused, because most clang flags can read or write
// files (-I, -include, @file, --config, -o), load code (-fplugin, -load,
// -Xclang) or hand arguments to other tools (-Wl, -Wa, -Wp, -mllvm). The
// error names the first offending flag and says why, on one line.
func ValidateFlags(flags []string) error {
	for _, f := range flags {
		if err := validateFlag(f); err != nil {
			return fmt.Errorf("flag %q: %s", f, err)
		}
	}
	return nil
}

func validateFlag(f string) error {
	switch {
	case f == "":
		return fmt.Errorf("empty flag")
	case strings.ContainsAny(f, "\x00\r\n"):
		return fmt.Errorf("not allowed: contains a newline or NUL byte")
	case f == "-g":
		return nil
	case f == "-O1" || f == "-O2" || f == "-O3":
		return nil
	case strings.HasPrefix(f, "-std="):
		if !allowedStds[f[len("-std="):]] {
			return fmt.Errorf("not allowed: -std= must be one of c99, c11, c17, c2x, c23, gnu99, gnu11, gnu17, gnu2x, gnu23")
		}
		return nil
	case strings.HasPrefix(f, "-D"):
		def := f[2:]
		if def == "" {
			return fmt.Errorf("not allowed: give the macro in the same flag, as -DNAME or -DNAME=VALUE")
		}
		name, _, _ := strings.Cut(def, "=")
		if !isIdentifier(name) {
			return fmt.Errorf("not allowed: %q is not a C identifier", name)
		}
		return nil
	case strings.HasPrefix(f, "-U"):
		if !isIdentifier(f[2:]) {
			return fmt.Errorf("not allowed: -U needs a C identifier, as -UNAME")
		}
		return nil
	case strings.HasPrefix(f, "-Wl,"), strings.HasPrefix(f, "-Wa,"), strings.HasPrefix(f, "-Wp,"):
		return fmt.Errorf("not allowed: %s passes arguments to another tool", f[:4])
	case strings.HasPrefix(f, "-W"):
		if !isWarning(f[2:]) {
			return fmt.Errorf("not allowed: a warning flag is -W followed by letters, digits, '-', '_', '#' and '='")
		}
		return nil
	}
	return fmt.Errorf("%s", notAllowed)
}

// isIdentifier reports whether s is a C identifier.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// isWarning reports whether w (a -W flag without its -W) looks like a
// warning option: -Wall, -Wno-foo, -Werror, -Werror=foo, -W#warnings.
func isWarning(w string) bool {
	if w == "" {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '#':
		case i > 0 && (c == '-' || c == '_' || c == '='):
		default:
			return false
		}
	}
	return true
}

// pchCompatible reports whether a precompiled vmlinux.h built with the fixed
// flags may be used together with the user's flags: macros (vmlinux.h tests
// BPF_NO_PRESERVE_ACCESS_INDEX) and the C dialect change its meaning, while
// warnings and the optimisation level do not.
func pchCompatible(flags []string) bool {
	for _, f := range flags {
		if strings.HasPrefix(f, "-D") || strings.HasPrefix(f, "-U") || strings.HasPrefix(f, "-std=") {
			return false
		}
	}
	return true
}
