package core

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
)

func TestLoadErrors(t *testing.T) {
	if _, err := LoadObject([]byte("not an ELF object")); err == nil {
		t.Error("LoadObject accepted garbage")
	}
	if _, err := LoadKernel("bad", []byte("not BTF at all, not at all"), nil); err == nil {
		t.Error("LoadKernel accepted garbage")
	}
	if _, err := (&Object{}).Relocate(&Kernel{ID: "empty"}); err == nil {
		t.Error("Relocate accepted a kernel without BTF")
	}
	if _, err := (&Object{}).Fixups(); err == nil {
		t.Error("Fixups accepted no targets")
	}
}

// TestHandBuiltKernel relocates against a Kernel made without LoadKernel,
// from a spec the caller parsed.
func TestHandBuiltKernel(t *testing.T) {
	f := setup(t)
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(f.hostBTF))
	if err != nil {
		t.Fatal(err)
	}
	o := f.object(t, "execsnoop")
	got := relocate(t, o, &Kernel{ID: "hand", VMLinux: spec})
	want := relocate(t, o, f.host)
	got.Report.Kernel = want.Report.Kernel
	if !jsonEqual(got.Report, want.Report) || !bytes.Equal(got.MinBTF, want.MinBTF) || !bytes.Equal(got.Relocated, want.Relocated) {
		t.Errorf("hand-built kernel: %+v, want %+v", got.Report, want.Report)
	}
}
