package main

import (
	"bytes"
	"testing"

	"github.com/bpfarm/bpfarm/api"
)

func TestPrintCoverage(t *testing.T) {
	as := []api.Artifact{
		{Revision: "r1", Kernel: "debian/12/x86_64/6.12", State: "done", Status: "ok"},
		{Revision: "r0", Kernel: "debian/12/x86_64/6.0", State: "done", Status: "failed"},
		{Revision: "r1", Kernel: "debian/12/arm64/6.1", State: "queued"},
	}
	var b bytes.Buffer
	printCoverage(&b, "r1", as)
	got := b.String()
	for _, line := range []string{"kernels:\n", "KERNEL", "debian/12/arm64/6.1", "queued", "debian/12/x86_64/6.12"} {
		if !bytes.Contains([]byte(got), []byte(line)) {
			t.Errorf("missing %q in:\n%s", line, got)
		}
	}
	if bytes.Contains([]byte(got), []byte("6.0")) {
		t.Errorf("another revision's artifact printed:\n%s", got)
	}
	if i, j := bytes.Index([]byte(got), []byte("arm64/6.1")), bytes.Index([]byte(got), []byte("x86_64/6.12")); i > j {
		t.Errorf("not sorted by kernel:\n%s", got)
	}
	b.Reset()
	printCoverage(&b, "r9", as)
	printVerifications(&b, "r9", []api.Verification{{Revision: "r1"}})
	if b.Len() != 0 {
		t.Errorf("a revision without artifacts printed %q", b.String())
	}
}
