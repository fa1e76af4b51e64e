package client

import (
	"crypto/ed25519"
	"fmt"
	"testing"

	"github.com/bpfarm/bpfarm/manifest"
)

// benchManifest is a signed manifest shaped like a real one: three files
// and a relocation report of a few programs.
func benchManifest(b *testing.B) (ed25519.PublicKey, *manifest.Manifest) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	m := &manifest.Manifest{Version: manifest.Version, Program: "execsnoop", BuildID: 42, Arch: "x86_64",
		Revision: "7e2c13d5a554f19ac1e0c18843a8fef6b0e621d5fd53e54e1d6782c13e36098b",
		Kernel:   "debian/12/x86_64/6.1.0-57-cloud-amd64", Compiler: "clang 19.1.7", Flags: []string{"-O2", "-g"},
		Files: map[string]manifest.File{}, Status: "ok"}
	for _, role := range []string{manifest.FileObject, manifest.FileMinBTF, manifest.FileRelocated} {
		m.Files[role] = manifest.File{Name: "execsnoop." + role, SHA256: fmt.Sprintf("%064x", len(role)), Size: 30 << 10}
	}
	for i := range 4 {
		m.Report.Programs = append(m.Report.Programs, manifest.ProgramReport{Name: fmt.Sprintf("prog%d", i),
			Section: "tp/syscalls/sys_enter_execve", Status: "ok", Relocations: 12})
	}
	if err := m.Sign(priv); err != nil {
		b.Fatal(err)
	}
	return pub, m
}

// BenchmarkCheckArtifact: the whole check an agent runs on a manifest
// (signature, binding to the request, no downgrade).
func BenchmarkCheckArtifact(b *testing.B) {
	pub, m := benchManifest(b)
	req := Request{Program: m.Program, Kernel: m.Kernel, ResolvedRevision: m.Revision, ResolvedKernel: m.Kernel,
		Match: "exact", Newest: LoadedRevision{Revision: m.Revision, BuildID: m.BuildID}}
	for b.Loop() {
		if err := CheckArtifact(pub, req, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManifestVerify: the signature check alone, what agents ran
// before binding artifacts to their requests.
func BenchmarkManifestVerify(b *testing.B) {
	pub, m := benchManifest(b)
	for b.Loop() {
		if err := m.Verify(pub); err != nil {
			b.Fatal(err)
		}
	}
}
