package httpapi

import (
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/server/store"
)

func TestNearest(t *testing.T) {
	var ks []store.Kernel
	for _, kid := range []string{
		"debian/12/x86_64/6.12.117+deb12-cloud-amd64", "debian/12/x86_64/6.1.0-50-cloud-amd64",
		"debian/12/x86_64/6.1.0-9-cloud-amd64", "ubuntu/22.04/x86_64/6.1.0-60-cloud-amd64",
		"debian/11/x86_64/5.10.0-30-cloud-amd64", "debian/12/x86_64/6.18.44-fc",
	} {
		id, err := kernel.ParseID(kid)
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, store.Kernel{KID: kid, Distro: id.Distro, Version: id.Version, Arch: id.Arch, Release: id.Release})
	}
	want, _ := kernel.ParseID("debian/12/x86_64/6.1.0-99-cloud-amd64")
	got := strings.Split(nearest(ks, want, 3), ", ")
	if got[0] != "debian/12/x86_64/6.1.0-50-cloud-amd64" || got[1] != "debian/12/x86_64/6.1.0-9-cloud-amd64" {
		t.Errorf("nearest to %s: %v", want, got)
	}
	if s := nearest(nil, want, 3); !strings.Contains(s, "no x86_64 kernel") {
		t.Errorf("empty archive: %q", s)
	}
}
