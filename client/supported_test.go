package client

import (
	"errors"
	"testing"

	"github.com/bpfarm/bpfarm/manifest"
)

func TestCheckSupported(t *testing.T) {
	const reason = "attach type BPF_TCX_INGRESS is not in this kernel"
	m := &manifest.Manifest{Kernel: "debian/12/x86_64/6.1.0-50-cloud-amd64", Report: manifest.Report{Programs: []manifest.ProgramReport{
		{Name: "ok", Status: manifest.StatusOK}, {Name: "poisoned", Status: manifest.StatusPoisoned},
		{Name: "tcx", Status: manifest.StatusUnsupported, Reason: reason}}}}
	err := CheckSupported(m, nil)
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupported) || ue.Program != "tcx" || ue.Reason != reason {
		t.Fatalf("all programs: %v", err)
	}
	if want := "program tcx is unsupported on debian/12/x86_64/6.1.0-50-cloud-amd64: " + reason; err.Error() != want {
		t.Errorf("%q, want %q", err, want)
	}
	if err := CheckSupported(m, []string{"ok", "poisoned"}); err != nil {
		t.Errorf("supported programs: %v", err)
	}
	if err := CheckSupported(m, []string{"ok", "tcx"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("with tcx: %v", err)
	}
}
