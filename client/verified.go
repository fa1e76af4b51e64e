package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bpfarm/bpfarm/manifest"
)

// ErrNotVerified is returned (wrapped) for artifacts refused by
// FetchOptions.RequireVerified.
var ErrNotVerified = errors.New("not verified on this kernel")

// CheckVerified checks that a (signature-checked) manifest records that
// the verifier of kernel kernelID itself accepted every program of the
// artifact, or every program of programs when not empty: the farm booted
// that kernel and loaded them there. An artifact matched by release under
// another kernel id is not verified on this kernel.
func CheckVerified(m *manifest.Manifest, kernelID string, programs []string) error {
	if m.Kernel != kernelID {
		return fmt.Errorf("%w: the artifact is for kernel %s, this host runs %s", ErrNotVerified, m.Kernel, kernelID)
	}
	if len(m.Verified) == 0 {
		return fmt.Errorf("%w: the farm has not verified it on %s (no kernel image in its archive, or not yet)", ErrNotVerified, kernelID)
	}
	if len(programs) == 0 {
		for _, p := range m.Report.Programs {
			programs = append(programs, p.Name)
		}
	}
	var missing, rejected []string
	for _, name := range programs {
		v, ok := m.Verified[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case !v.Accepted:
			rejected = append(rejected, fmt.Sprintf("%s (%s)", name, v.Error))
		}
	}
	switch {
	case len(rejected) > 0:
		return fmt.Errorf("%w: the verifier of %s rejected %s", ErrNotVerified, kernelID, strings.Join(rejected, ", "))
	case len(missing) > 0:
		return fmt.Errorf("%w: no verdict for %s", ErrNotVerified, strings.Join(missing, ", "))
	}
	return nil
}
