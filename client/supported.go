package client

import (
	"errors"
	"fmt"

	"github.com/bpfarm/bpfarm/manifest"
)

// ErrUnsupported matches (errors.Is) an *UnsupportedError.
var ErrUnsupported = errors.New("unsupported on this kernel")

// UnsupportedError refuses an artifact whose relocation report says its
// kernel lacks a BPF feature (map type, program type, attach type, helper
// or kfunc) one of the programs to load needs: the kernel would refuse it.
type UnsupportedError struct {
	Program string // the BPF program
	Kernel  string // the manifest's kernel id
	Reason  string // what the kernel lacks, on one line
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("program %s is unsupported on %s: %s", e.Program, e.Kernel, e.Reason)
}

// Is makes errors.Is(err, ErrUnsupported) hold.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// CheckSupported returns an *UnsupportedError for the first program of
// programs (every program of the artifact when empty) that the
// (signature-checked) manifest's report calls unsupported, or nil.
func CheckSupported(m *manifest.Manifest, programs []string) error {
	if p := m.Report.Unsupported(programs...); p != nil {
		return &UnsupportedError{Program: p.Name, Kernel: m.Kernel, Reason: p.Reason}
	}
	return nil
}
