package client

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/manifest"
)

// TestCheckArtifact is the table of the one check that the Go library,
// `bpfarm-agent load` and the daemon apply before loading anything.
func TestCheckArtifact(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	const (
		revA = "aaaa000000000000000000000000000000000000000000000000000000000001" // older (build 5)
		revB = "bbbb000000000000000000000000000000000000000000000000000000000002" // newer (build 9)
		k61  = "debian/12/x86_64/6.1.0-50-cloud-amd64"
		k40  = "debian/12/x86_64/6.1.0-40-cloud-amd64"
		kU61 = "ubuntu/22.04/x86_64/6.1.0-50-cloud-amd64" // same release and arch as k61
		kArm = "debian/12/arm64/6.1.0-50-cloud-arm64"
	)
	type mf struct {
		program, revision, kernel, arch string
		build                           int64
		key                             ed25519.PrivateKey // nil: unsigned
	}
	sign := func(x mf) *manifest.Manifest {
		m := &manifest.Manifest{Version: manifest.Version, Program: x.program, Revision: x.revision, BuildID: x.build,
			Kernel: x.kernel, Arch: x.arch, Files: map[string]manifest.File{}}
		if x.key != nil {
			if err := m.Sign(x.key); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	good := mf{"schedcount", revB, k61, "x86_64", 9, priv}
	with := func(f func(*mf)) mf { x := good; f(&x); return x }
	newestB := LoadedRevision{Revision: revB, BuildID: 9}
	req := Request{Program: "schedcount", Kernel: k61, ResolvedRevision: revB, ResolvedKernel: k61, Match: "exact"}
	reqWith := func(f func(*Request)) Request { r := req; f(&r); return r }

	for _, tc := range []struct {
		name string
		req  Request
		m    mf
		want error  // nil, or the kind (errors.Is)
		line string // a part of the one line
	}{
		{"the artifact asked for", req, good, nil, ""},
		{"revision asked by prefix", reqWith(func(r *Request) { r.Revision = "bbbb0000" }), good, nil, ""},
		{"from the cache (nothing resolved)", Request{Program: "schedcount", Kernel: k61}, good, nil, ""},
		{"release match", reqWith(func(r *Request) { r.ResolvedKernel, r.Match = kU61, "release" }),
			with(func(x *mf) { x.kernel = kU61 }), nil, ""},
		{"newer than the newest loaded", reqWith(func(r *Request) { r.Newest = LoadedRevision{Revision: revA, BuildID: 5} }), good, nil, ""},
		{"the newest loaded again", reqWith(func(r *Request) { r.Newest = newestB }), good, nil, ""},
		{"older, asked for explicitly", reqWith(func(r *Request) {
			r.Revision, r.ResolvedRevision, r.Newest, r.AllowOlder = revA, revA, newestB, true
		}), with(func(x *mf) { x.revision, x.build = revA, 5 }), nil, ""},

		{"unsigned", req, with(func(x *mf) { x.key = nil }), ErrSignature, "not signed"},
		{"signed by another key", req, with(func(x *mf) { x.key = otherPriv }), ErrSignature, "does not verify"},
		{"another program", req, with(func(x *mf) { x.program = "execsnoop" }), ErrWrongArtifact,
			"asked for program schedcount, the signed manifest is for program execsnoop"},
		{"another revision than asked", reqWith(func(r *Request) { r.Revision, r.ResolvedRevision = revA, "" }), good, ErrWrongArtifact,
			"asked for revision " + revA[:12] + ", the signed manifest is for revision " + revB[:12]},
		{"another revision than resolved", reqWith(func(r *Request) { r.ResolvedRevision = revA }), good, ErrWrongArtifact,
			"asked for revision " + revA[:12]},
		{"older than the newest loaded", reqWith(func(r *Request) { r.ResolvedRevision, r.Newest = revA, newestB }),
			with(func(x *mf) { x.revision, x.build = revA, 5 }), ErrWrongArtifact,
			"revision " + revA[:12] + " is older than revision " + revB[:12]},
		{"older, but the server's choice (daemon, unpinned)", reqWith(func(r *Request) {
			r.Revision, r.ResolvedRevision, r.Newest = revA, revA, newestB
		}), with(func(x *mf) { x.revision, x.build = revA, 5 }), ErrWrongArtifact, "is older than"},
		{"another kernel", reqWith(func(r *Request) { r.ResolvedKernel = "" }), with(func(x *mf) { x.kernel = k40 }), ErrWrongArtifact,
			"asked for kernel " + k61 + ", the signed manifest is for kernel " + k40},
		{"another kernel than resolved", reqWith(func(r *Request) { r.ResolvedKernel, r.Match = kU61, "release" }), good, ErrWrongArtifact,
			"asked for kernel " + kU61},
		{"another distro's kernel said exact", req, with(func(x *mf) { x.kernel = kU61 }), ErrWrongArtifact, "asked for kernel " + k61},
		{"another release said release match", reqWith(func(r *Request) { r.ResolvedKernel, r.Match = k40, "release" }),
			with(func(x *mf) { x.kernel = k40 }), ErrWrongArtifact, "asked for kernel " + k61},
		{"another arch", reqWith(func(r *Request) { r.ResolvedKernel = kArm }), with(func(x *mf) { x.kernel, x.arch = kArm, "arm64" }),
			ErrWrongArtifact, "asked for arch x86_64, the signed manifest is for arch arm64"},
		{"arch field lies", req, with(func(x *mf) { x.kernel = kArm }), ErrWrongArtifact, "asked for kernel " + k61},
		{"not this host's release", reqWith(func(r *Request) { r.Kernel, r.ResolvedKernel, r.Host = k40, k40, k61 }),
			with(func(x *mf) { x.kernel = k40 }), ErrWrongArtifact, "asked for kernel " + k61 + ", the signed manifest is for kernel " + k40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckArtifact(pub, tc.req, sign(tc.m))
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("got %v, want %v", err, tc.want)
			case tc.want != nil && (!strings.Contains(err.Error(), tc.line) || strings.Contains(err.Error(), "\n")):
				t.Fatalf("error %q: want one line with %q", err, tc.line)
			}
		})
	}
	if err := CheckArtifact(nil, req, sign(good)); !errors.Is(err, ErrNoPublicKey) {
		t.Fatalf("no key: %v", err)
	}
}

// TestRecordLoaded: the newest loaded revision only ever rises.
func TestRecordLoaded(t *testing.T) {
	dir := t.TempDir()
	if n, err := NewestLoaded(dir, "p"); err != nil || n.Revision != "" {
		t.Fatalf("empty: %+v %v", n, err)
	}
	for _, m := range []manifest.Manifest{{Program: "p", Revision: "r5", BuildID: 5}, {Program: "p", Revision: "r9", BuildID: 9},
		{Program: "p", Revision: "r5", BuildID: 5}} {
		if err := RecordLoaded(dir, &m); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := NewestLoaded(dir, "p"); err != nil || n.Revision != "r9" || n.BuildID != 9 {
		t.Fatalf("newest: %+v %v", n, err)
	}
	if n, _ := NewestLoaded(dir, "other"); n.Revision != "" {
		t.Fatalf("other program: %+v", n)
	}
}
