package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/cilium/ebpf/btf"
)

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// linuxImageControl is the control file of a kernel package.
const linuxImageControl = `Package: linux-image-6.1.0-99-cloud-amd64-unsigned
Source: linux
Version: 6.1.999-1
Architecture: amd64
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Description: Linux 6.1 for x86-64 cloud
 The Linux kernel 6.1 and modules for use on cloud platforms.
`

func TestImportRefuses(t *testing.T) {
	k61 := debKernel(t, "6.1")
	rel := k61.ID.Release
	half := k61.BTF[:len(k61.BTF)/2]
	small := mustMarshal(t)
	vmlinuz, err := os.ReadFile(k61.Image)
	if err != nil {
		t.Fatal(err)
	}
	realDeb, err := os.ReadFile(testenv.DebianKernel(t, "6.1"))
	if err != nil {
		t.Fatal(err)
	}

	goodTarXZ := btfTarXZ(t, rel, k61.BTF)
	corruptXZ := bytes.Clone(goodTarXZ)
	for i := len(corruptXZ) / 2; i < len(corruptXZ)/2+64; i++ {
		corruptXZ[i] ^= 0x55
	}
	// A bzImage whose payload is a gzip of something else.
	fakePayload := append(bytes.Clone(vmlinuz[:21196]), gzipData(t, randomBytes(1<<20, 7))...)

	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"random", randomBytes(1<<20, 1), "unrecognized content (starts with"},
		{"text", []byte("Linux version 6.1.0\n"), "unrecognized content"},
		{"corrupt xz header", append(bytes.Clone(xzMagic), randomBytes(4096, 2)...), "not a btfhub .btf.tar.xz: corrupt xz"},
		{"corrupt xz data", corruptXZ, "entry " + rel + ".btf: "},
		{"truncated xz", goodTarXZ[:len(goodTarXZ)/2], "entry " + rel + ".btf: "},
		{"xz not a tar", xzData(t, randomBytes(4096, 3)), "not a btfhub .btf.tar.xz: the xz data is not a tar archive"},
		// (The tar's structure is checked before its BTF: small BTF will do.)
		{"tar with two entries", xzData(t, makeTar(t,
			tarEntry{name: rel + ".btf", data: small},
			tarEntry{name: "other.btf", data: small})), "more than one entry: " + rel + ".btf and other.btf"},
		{"tar entry in a directory", xzData(t, makeTar(t, tarEntry{name: "x/" + rel + ".btf", data: small})), "is not a file RELEASE.btf"},
		{"tar entry a directory", xzData(t, makeTar(t, tarEntry{name: rel + ".btf", dir: true})), "is not a file RELEASE.btf"},
		{"truncated BTF in tar", btfTarXZ(t, rel, half), "truncated BTF in " + rel + ".btf: type section ends at byte"},
		{"truncated BTF", half, "truncated BTF: type section ends at byte"},
		{"BTF header only", k61.BTF[:20], "truncated BTF: header needs 24 bytes, have 20"},
		{"BTF of a program", mustMarshal(t), "no struct task_struct: not a kernel's BTF"},
		{"BTF bad version", append([]byte{0x9f, 0xeb, 0x02, 0}, k61.BTF[4:]...), "invalid BTF: unsupported BTF version 2"},
		{"corrupt BTF types", corruptTypes(k61.BTF), "invalid BTF: "},
		{"truncated vmlinuz", vmlinuz[:len(vmlinuz)/2], "no kernel with BTF found"},
		{"vmlinuz with another payload", fakePayload, "gzip at offset 21196: decompressed data is not a kernel"},
		{"non-kernel deb", makeDeb(t, "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\n",
			tarEntry{name: "./usr/bin/hello", data: []byte("#!/bin/sh\necho hello\n")}),
			"not a Debian linux-image package: package hello 2.10-3"},
		{"kernel deb without vmlinuz", makeDeb(t, linuxImageControl,
			tarEntry{name: "./boot/config-6.1.0-99-cloud-amd64", data: []byte("CONFIG_DEBUG_INFO_BTF=y\n")}),
			"not a Debian linux-image package: no boot/vmlinuz-* in data.tar.xz"},
		{"kernel deb with garbage vmlinuz", makeDebComp(t, "gz", linuxImageControl,
			tarEntry{name: "./boot/vmlinuz-6.1.0-99-cloud-amd64", data: randomBytes(1<<20, 4)}),
			"boot/vmlinuz-6.1.0-99-cloud-amd64: no "},
		{"kernel deb with another kernel", makeDebComp(t, "gz", linuxImageControl,
			tarEntry{name: "./boot/vmlinuz-6.1.0-99-cloud-amd64", data: vmlinuz}),
			"boot/vmlinuz-6.1.0-99-cloud-amd64 holds kernel release " + rel},
		{"kernel deb for i386", makeDeb(t, "Package: linux-image-686\nVersion: 1\nArchitecture: i386\n"),
			`unsupported architecture "i386"`},
		{"deb without debian-binary", makeAr(arMemberData{"data.tar.xz", xzData(t, nil)}), "not a Debian package: no debian-binary"},
		{"truncated deb", realDeb[:len(realDeb)/2], "not a Debian package: truncated ar archive: member data.tar.xz needs"},
		{"ar garbage", append([]byte("!<arch>\n"), randomBytes(100, 5)...), "not a Debian package: invalid ar archive"},
		{"ELF without BTF", elfWithoutBTF(t), "ELF has no .BTF section"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			p := writeFile(t, t.TempDir(), "input", tt.data)
			err := Import(context.Background(), p, Options{TempDir: tmp}, func(k *Kernel) error {
				t.Errorf("callback called for %s", k.Source)
				return nil
			})
			checkFormatError(t, err, p, tt.want)
			t.Log(err)
			checkEmptyDir(t, tmp)
		})
	}

	t.Run("broken file in a tree", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "debian/12/x86_64/"+rel+".btf.tar.xz", goodTarXZ)
		bad := writeFile(t, root, "ubuntu/22.04/x86_64/5.15.0-91-generic.btf.tar.xz", btfTarXZ(t, "5.15.0-91-generic", half))
		calls := 0
		err := Import(context.Background(), root, Options{}, func(*Kernel) error { calls++; return nil })
		te := checkTreeError(t, err, root, 2, bad)
		checkFormatError(t, te.Refused[0], bad, "truncated BTF in 5.15.0-91-generic.btf")
		if calls != 1 {
			t.Errorf("%d calls, want 1 (for the good file)", calls)
		}
	})
	t.Run("tree path not an ID", func(t *testing.T) {
		root := t.TempDir()
		bad := writeFile(t, root, "debian/12/riscv64/"+rel+".btf.tar.xz", goodTarXZ)
		err := Import(context.Background(), root, Options{}, func(*Kernel) error { return nil })
		te := checkTreeError(t, err, root, 1, bad)
		checkFormatError(t, te.Refused[0], bad, `arch "riscv64" is not x86_64 or arm64`)
	})
	t.Run("empty tree", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "README", []byte("hi"))
		err := Import(context.Background(), root, Options{}, func(*Kernel) error { return nil })
		checkFormatError(t, err, root, "not a btfhub-archive tree")
	})
	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope")
		err := Import(context.Background(), p, Options{}, func(*Kernel) error { return nil })
		if !os.IsNotExist(err) {
			t.Errorf("got %v, want a not-exist error", err)
		}
	})
	t.Run("BTF over the limit", func(t *testing.T) {
		p := writeFile(t, t.TempDir(), "vmlinux.btf", k61.BTF)
		err := Import(context.Background(), p, Options{MaxBTFSize: 1 << 20}, func(*Kernel) error { return nil })
		checkFormatError(t, err, p, "exceeds the limit of 1048576")
	})
}

// mustMarshal returns the BTF of a program: valid BTF, but not a kernel's.
func mustMarshal(t testing.TB) []byte {
	t.Helper()
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	s := &btf.Struct{Name: "event", Size: 8, Members: []btf.Member{
		{Name: "pid", Type: i32},
		{Name: "tgid", Type: i32, Offset: 32},
	}}
	b, err := btf.NewBuilder([]btf.Type{s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// corruptTypes returns a copy of little-endian BTF whose first type has an
// unknown kind.
func corruptTypes(raw []byte) []byte {
	raw = bytes.Clone(raw)
	hdrLen := binary.LittleEndian.Uint32(raw[4:])
	typeOff := binary.LittleEndian.Uint32(raw[8:])
	info := raw[hdrLen+typeOff+4:]
	binary.LittleEndian.PutUint32(info, binary.LittleEndian.Uint32(info)|0x1f<<24)
	return raw
}

// elfWithoutBTF returns an executable ELF without .BTF: the test binary.
func elfWithoutBTF(t testing.TB) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkTreeError checks that err is a one-line *TreeError of the tree root
// with files files, refusing exactly the files bad, in order.
func checkTreeError(t testing.TB, err error, root string, files int, bad ...string) *TreeError {
	t.Helper()
	var te *TreeError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TreeError", err, err)
	}
	if strings.ContainsAny(err.Error(), "\r\n") || !strings.HasPrefix(err.Error(), "import "+root+": refused ") {
		t.Errorf("error %q: not one line starting with import %s: refused", err, root)
	}
	if te.Files != files || len(te.Refused) != len(bad) {
		t.Fatalf("TreeError: %d files, %d refused; want %d, %d: %v", te.Files, len(te.Refused), files, len(bad), err)
	}
	for i, p := range bad {
		if te.Refused[i].Path != p {
			t.Errorf("refused file %d: %s, want %s", i, te.Refused[i].Path, p)
		}
	}
	return te
}
