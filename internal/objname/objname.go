// Package objname checks the names a BPF object gives its programs and
// maps. They are chosen by whoever wrote the object (an asm label can be
// any string) and end up in pin paths: they are data, never paths. The
// server's inspection and the agent's loader both refuse an object with a
// name that is not a C identifier (dots allowed, as in .rodata).
package objname

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
)

// MaxLen bounds a name (a file name on bpffs is at most 255 bytes).
const MaxLen = 255

// nameRE: a C identifier where '.' is also allowed, with at least one
// character that is not a dot (so never "." or "..").
var nameRE = regexp.MustCompile(`^\.*[A-Za-z_][A-Za-z0-9_.]*$`)

// Valid reports whether name is a valid program or map name.
func Valid(name string) bool {
	return len(name) <= MaxLen && nameRE.MatchString(name)
}

// Check returns an error naming kind ("program", "map") and name when name
// is not valid.
func Check(kind, name string) error {
	if Valid(name) {
		return nil
	}
	if len(name) > MaxLen {
		return fmt.Errorf("%s name %.40q... is longer than %d bytes", kind, name, MaxLen)
	}
	return fmt.Errorf("%s name %q is not a C identifier (letters, digits, '_' and '.', as in .rodata): names are pinned as files, never paths",
		kind, name)
}

// CheckAll checks the names of programs and maps (the keys of the maps),
// in order, and returns the first problem.
func CheckAll[P, M any](programs map[string]P, maps_ map[string]M) error {
	for _, name := range slices.Sorted(maps.Keys(programs)) {
		if err := Check("program", name); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(maps_)) {
		if err := Check("map", name); err != nil {
			return err
		}
	}
	return nil
}
