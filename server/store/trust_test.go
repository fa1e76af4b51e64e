package store

import (
	"context"
	"errors"
	"testing"

	"github.com/bpfarm/bpfarm/api"
)

// TestEnrollHost: enrolling binds a token to a host; enrolling again
// revokes the old token; hosts show the token they registered with.
func TestEnrollHost(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		t1, revoked, err := db.EnrollHost(ctx, "web-1", map[string]string{"role": "web"}, "host-web-1-a", "h1")
		if err != nil || len(revoked) != 0 || t1.Role != api.RoleHost || t1.Host != "web-1" {
			t.Fatalf("enroll: %+v %v %v", t1, revoked, err)
		}
		got, err := db.TokenByHash(ctx, "h1")
		if err != nil || got.Host != "web-1" || got.Role != api.RoleHost {
			t.Fatalf("token: %+v %v", got, err)
		}
		if lb, err := db.EnrolledLabels(ctx, got.ID); err != nil || lb["role"] != "web" {
			t.Fatalf("enrolled labels: %v %v", lb, err)
		}
		if _, err := db.RegisterHost(ctx, api.HostRegistration{Name: "web-1", Kernel: "debian/12/x86_64/6.1.0-1-amd64"}, "host-web-1-a"); err != nil {
			t.Fatal(err)
		}
		_, revoked, err = db.EnrollHost(ctx, "web-1", nil, "host-web-1-b", "h2")
		if err != nil || len(revoked) != 1 || revoked[0] != "host-web-1-a" {
			t.Fatalf("enroll again: %v %v", revoked, err)
		}
		if _, err := db.TokenByHash(ctx, "h1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the old token still works: %v", err)
		}
		h, err := db.Host(ctx, "web-1")
		if err != nil || h.Token != "host-web-1-a" || h.Enrolled != "host-web-1-b" {
			t.Fatalf("host: token %q enrolled %q %v", h.Token, h.Enrolled, err)
		}
		// The migration's check: a host token needs a host, others none.
		if _, err := db.CreateToken(ctx, "x", api.RoleHost, "h3"); err == nil {
			t.Fatal("a host token without a host was stored")
		}
	})
}

// TestKernelTrust: a host's upload is unverified and never replaces a
// trusted kernel; a trusted import of the same BTF (under any id)
// trusts it, one of another BTF replaces it; approval trusts it.
func TestKernelTrust(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		k := func(kid, btf, trust, host string) Kernel {
			id := splitKID(kid)
			return Kernel{KID: kid, Distro: id[0], Version: id[1], Arch: id[2], Release: id[3], BTFBlob: btf, BTFSize: 1,
				Trust: trust, SourceHost: host}
		}
		const a, b = "ubuntu/22.04/x86_64/5.15.0-1", "debian/12/x86_64/6.1.0-1"
		up, created, _, err := db.PutKernel(ctx, k(a, "btf1", api.KernelUnverified, "web-1"), false)
		if err != nil || !created || !up.Unverified() || up.SourceHost != "web-1" {
			t.Fatalf("host upload: %+v %v", up, err)
		}
		if !up.ServedTo("web-1", false) || up.ServedTo("web-2", false) || up.ServedTo("", false) || !up.ServedTo("", true) {
			t.Fatal("ServedTo")
		}
		// A trusted kernel is never replaced by a host's upload.
		if _, _, _, err := db.PutKernel(ctx, k(b, "btf2", "", ""), false); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := db.PutKernel(ctx, k(b, "evil", api.KernelUnverified, "web-1"), true); !errors.Is(err, ErrConflict) {
			t.Fatalf("a host's upload replaced a trusted kernel: %v", err)
		}
		// The same BTF from a trusted import under another id trusts it.
		if _, _, _, err := db.PutKernel(ctx, k("other/1/x86_64/5.15.0-1", "btf1", "", ""), false); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.Kernel(ctx, a); got.Unverified() {
			t.Fatalf("the same BTF from a trusted import left %s unverified", a)
		}
		// A trusted import of another BTF replaces an unverified kernel.
		const c = "ubuntu/22.04/x86_64/5.15.0-2"
		if _, _, _, err := db.PutKernel(ctx, k(c, "btf3", api.KernelUnverified, "web-2"), false); err != nil {
			t.Fatal(err)
		}
		if got, _, _, err := db.PutKernel(ctx, k(c, "btf4", "", ""), false); err != nil || got.Unverified() || got.BTFBlob != "btf4" {
			t.Fatalf("trusted import over an unverified kernel: %+v %v", got, err)
		}
		// Approval.
		const d = "ubuntu/22.04/x86_64/5.15.0-3"
		if _, _, _, err := db.PutKernel(ctx, k(d, "btf5", api.KernelUnverified, "web-3"), false); err != nil {
			t.Fatal(err)
		}
		if got, changed, err := db.ApproveKernel(ctx, d); err != nil || !changed || got.Unverified() {
			t.Fatalf("approve: %+v %v %v", got, changed, err)
		}
		if _, changed, _ := db.ApproveKernel(ctx, d); changed {
			t.Fatal("approving twice changed something")
		}
		if _, _, err := db.ApproveKernel(ctx, "no/such/x86_64/kernel"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("approve an unknown kernel: %v", err)
		}
	})
}

func splitKID(kid string) [4]string {
	var out [4]string
	i := 0
	start := 0
	for j := 0; j <= len(kid) && i < 4; j++ {
		if j == len(kid) || kid[j] == '/' {
			out[i] = kid[start:j]
			i++
			start = j + 1
		}
	}
	return out
}
