package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/cilium/ebpf/btf"
)

func TestHost(t *testing.T) {
	if _, err := os.Stat(kernel.VmlinuxBTF); err != nil {
		testenv.Require(t, "kernel BTF", err.Error())
	}
	k, err := Host(Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := kernel.Host()
	if err != nil {
		t.Fatal(err)
	}
	if k.ID != h.ID || k.Build != h.Build || k.Source != "host" {
		t.Errorf("Host: ID %s build %q source %q; kernel.Host says %s %q", k.ID, k.Build, k.Source, h.ID, h.Build)
	}
	if err := k.ID.Validate(); err != nil {
		t.Error(err)
	}
	if k.Banner == nil || k.Banner.Release != k.ID.Release {
		t.Errorf("Banner = %+v, want one of release %s", k.Banner, k.ID.Release)
	}
	sysfs, err := os.ReadFile(kernel.VmlinuxBTF)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.BTF, sysfs) {
		t.Errorf("BTF differs from %s", kernel.VmlinuxBTF)
	}
	base := loadSpec(t, k.BTF)
	checkStruct(t, base, "task_struct", "pid")
	for _, m := range k.Modules {
		if _, err := btf.LoadSplitSpecFromReader(bytes.NewReader(m.BTF), base); err != nil {
			t.Errorf("module %s: %v", m.Name, err)
		}
	}
	if k.Config != nil && !bytes.Contains(k.Config, []byte("\nCONFIG_DEBUG_INFO_BTF=y\n")) {
		t.Error("host config lacks CONFIG_DEBUG_INFO_BTF=y")
	}
	t.Logf("host %s: BTF %d bytes, %d modules, config %d bytes", k.ID, len(k.BTF), len(k.Modules), len(k.Config))
}

// debFile matches the name of a Debian kernel package.
var debFile = regexp.MustCompile(`^linux-image-(.+)-unsigned_(\d+)\.(\d+)\.(\d+)-[^_]+_amd64\.deb$`)

func TestImportDeb(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			deb := testenv.DebianKernel(t, series)
			m := debFile.FindStringSubmatch(filepath.Base(deb))
			if m == nil {
				t.Fatalf("unexpected package name %s", deb)
			}
			release := m[1]
			upstream := m[2] + "." + m[3] + "." + m[4]

			tmp := t.TempDir()
			var image string
			var k *Kernel
			err := Import(context.Background(), deb, Options{TempDir: tmp}, func(got *Kernel) error {
				if k != nil {
					t.Error("more than one kernel")
				}
				k = got
				image = got.Image
				fi, err := os.Stat(got.Image)
				if err != nil || fi.Size() == 0 {
					t.Errorf("Image %q: %v, %v", got.Image, fi, err)
				}
				return shareDebKernel(series, got)
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(image); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Image %s not removed after the callback (KeepImage unset): %v", image, err)
			}
			checkEmptyDir(t, tmp)

			if want := "debian/12/x86_64/" + release; k.ID.String() != want {
				t.Errorf("ID = %s, want %s", k.ID, want)
			}
			if want := "Debian " + upstream + "-"; !strings.Contains(k.Build, want) || !strings.HasPrefix(k.Build, "#1 ") {
				t.Errorf("Build = %q, want #1 ... %s...", k.Build, want)
			}
			if k.Banner == nil || k.Banner.Release != release || k.Banner.Build != k.Build {
				t.Fatalf("Banner = %+v", k.Banner)
			}
			a, _ := strconv.Atoi(m[2])
			b, _ := strconv.Atoi(m[3])
			c, _ := strconv.Atoi(m[4])
			if got, want := k.Banner.VersionCode(), kernel.VersionCode(a, b, c); got != want {
				t.Errorf("Banner.VersionCode() = %#x, want %#x", got, want)
			}
			if !bytes.Contains(k.Config, []byte("\nCONFIG_DEBUG_INFO_BTF=y\n")) {
				t.Errorf("Config (%d bytes) lacks CONFIG_DEBUG_INFO_BTF=y", len(k.Config))
			}

			base := loadSpec(t, k.BTF)
			checkStruct(t, base, "task_struct", "pid")
			checkStruct(t, base, "ext4_sb_info", "s_es") // ext4 is built in
			if len(k.Modules) < 100 {
				t.Fatalf("%d modules with BTF, want > 100", len(k.Modules))
			}
			mods := map[string][]byte{}
			total := 0
			for i, mod := range k.Modules {
				if i > 0 && k.Modules[i-1].Name >= mod.Name {
					t.Errorf("modules not sorted: %s before %s", k.Modules[i-1].Name, mod.Name)
				}
				if strings.Contains(mod.Name, "-") {
					t.Errorf("module name %s has '-', the kernel names modules with '_'", mod.Name)
				}
				mods[mod.Name] = mod.BTF
				total += len(mod.BTF)
			}
			for _, want := range []struct{ module, typ, member string }{
				{"btrfs", "btrfs_fs_info", "sb"},
				{"nf_tables", "nft_table", "chains"},
				{"xfs", "xfs_mount", "m_sb"},
			} {
				raw := mods[want.module]
				if raw == nil {
					t.Errorf("no module %s", want.module)
					continue
				}
				spec, err := btf.LoadSplitSpecFromReader(bytes.NewReader(raw), base)
				if err != nil {
					t.Fatalf("module %s: %v", want.module, err)
				}
				checkStruct(t, spec, want.typ, want.member)
				// Every type decodes, on the base.
				n := 0
				for _, err := range spec.All() {
					if err != nil {
						t.Fatalf("module %s: %v", want.module, err)
					}
					n++
				}
				if n == 0 {
					t.Errorf("module %s: no types", want.module)
				}
			}
			t.Logf("%s: %s", k.ID, k.Source)
			t.Logf("BTF %d bytes, %d modules with BTF (%d bytes), config %d bytes", len(k.BTF), len(k.Modules), total, len(k.Config))
		})
	}
}

func TestImportBTFHub(t *testing.T) {
	k61 := debKernel(t, "6.1")
	k612 := debKernel(t, "6.12")
	root := t.TempDir()
	files := map[string][]byte{
		"debian/12/x86_64/" + k61.ID.Release + ".btf.tar.xz":  btfTarXZ(t, k61.ID.Release, k61.BTF),
		"debian/12/x86_64/" + k612.ID.Release + ".btf.tar.xz": btfTarXZ(t, k612.ID.Release, k612.BTF),
		"README.md": []byte("not a kernel\n"),
	}
	for name, data := range files {
		writeFile(t, root, name, data)
	}

	var got []*Kernel
	err := Import(context.Background(), root, Options{}, func(k *Kernel) error {
		got = append(got, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*Kernel{k61, k612} // lexical order of the paths
	if len(got) != len(want) {
		t.Fatalf("got %d kernels, want %d", len(got), len(want))
	}
	for i, k := range got {
		if k.ID != want[i].ID {
			t.Errorf("kernel %d: ID %s, want %s", i, k.ID, want[i].ID)
		}
		if !bytes.Equal(k.BTF, want[i].BTF) {
			t.Errorf("kernel %s: BTF differs from the package's", k.ID)
		}
		if k.Source != "btfhub archive "+root || k.Image != "" || k.Modules != nil {
			t.Errorf("kernel %s: Source %q Image %q %d modules", k.ID, k.Source, k.Image, len(k.Modules))
		}
	}

	// A subtree gives the same IDs.
	sub := filepath.Join(root, "debian", "12")
	n := 0
	if err := Import(context.Background(), sub, Options{}, func(k *Kernel) error {
		if k.ID != want[n].ID {
			t.Errorf("subtree: ID %s, want %s", k.ID, want[n].ID)
		}
		n++
		return nil
	}); err != nil || n != 2 {
		t.Errorf("subtree: %d kernels, %v", n, err)
	}

	// The callback's error stops the import and is returned as is.
	stop := errors.New("stop")
	calls := 0
	err = Import(context.Background(), root, Options{}, func(*Kernel) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Errorf("callback error: Import returned %v after %d calls", err, calls)
	}

	// One file alone: only the release is known.
	file := filepath.Join(root, "debian/12/x86_64/"+k61.ID.Release+".btf.tar.xz")
	k := mustImportOne(t, file, Options{})
	if k.ID != (kernel.ID{Release: k61.ID.Release}) || !bytes.Equal(k.BTF, k61.BTF) {
		t.Errorf("file: ID %#v, BTF equal %v", k.ID, bytes.Equal(k.BTF, k61.BTF))
	}

	// A canceled context stops the import.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Import(ctx, root, Options{}, func(*Kernel) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

func TestImportRawBTF(t *testing.T) {
	k61 := debKernel(t, "6.1")
	dir := t.TempDir()
	p := writeFile(t, dir, "vmlinux.btf", k61.BTF)
	k := mustImportOne(t, p, Options{})
	if !bytes.Equal(k.BTF, k61.BTF) || k.ID != (kernel.ID{}) || k.Source != "raw BTF "+p {
		t.Errorf("raw BTF: ID %#v, Source %q, BTF equal %v", k.ID, k.Source, bytes.Equal(k.BTF, k61.BTF))
	}

	// Big-endian BTF (s390x) of task_struct and all it refers to.
	var ts *btf.Struct
	if err := loadSpec(t, k61.BTF).TypeByName("task_struct", &ts); err != nil {
		t.Fatal(err)
	}
	b, err := btf.NewBuilder([]btf.Type{ts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	be, err := b.Marshal(nil, &btf.MarshalOptions{Order: binary.BigEndian})
	if err != nil {
		t.Fatal(err)
	}
	if be[0] != 0xeb || be[1] != 0x9f {
		t.Fatalf("marshaled BTF starts with % x, want big-endian magic", be[:2])
	}
	p = writeFile(t, dir, "be.btf", be)
	k = mustImportOne(t, p, Options{})
	if !bytes.Equal(k.BTF, be) {
		t.Error("big-endian BTF changed")
	}

	// Bytes after the BTF are dropped.
	p = writeFile(t, dir, "padded.btf", append(bytes.Clone(k61.BTF), make([]byte, 100)...))
	if k := mustImportOne(t, p, Options{}); !bytes.Equal(k.BTF, k61.BTF) {
		t.Errorf("padded BTF: got %d bytes, want %d", len(k.BTF), len(k61.BTF))
	}
}

// objcopy returns an objcopy that keeps allocated sections, or calls
// testenv.Require.
func objcopy(t *testing.T) string {
	for _, name := range []string{"llvm-objcopy-19", "llvm-objcopy", "objcopy"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Require(t, "objcopy", "none of llvm-objcopy-19, llvm-objcopy, objcopy on $PATH (apt-get install llvm-19 or binutils)")
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestImportVmlinux(t *testing.T) {
	k612 := debKernel(t, "6.12")
	dir := t.TempDir()
	oc := objcopy(t)
	// The vmlinux in a bzImage is stripped: no symbol table.
	stripped := decompressVmlinux(t, k612.Image, dir)
	// Give it a symbol table, as an unstripped vmlinux has.
	withSyms := filepath.Join(dir, "vmlinux-symbols")
	run(t, oc, "--add-symbol", "bpfarm_test=.text:0,global,function", stripped, withSyms)
	// And strip that again with --strip-all, which keeps .BTF, an
	// allocated section.
	reStripped := filepath.Join(dir, "vmlinux-strip-all")
	run(t, oc, "--strip-all", withSyms, reStripped)

	for _, tt := range []struct{ name, path string }{
		{"bzImage payload", stripped},
		{"with symbols", withSyms},
		{"strip-all", reStripped},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := btf.LoadSpec(tt.path); err != nil {
				t.Logf("btf.LoadSpec: %v (Import reads .BTF itself)", err)
			}
			k := mustImportOne(t, tt.path, Options{})
			if !bytes.Equal(k.BTF, k612.BTF) {
				t.Errorf("BTF differs from the package's (%d vs %d bytes)", len(k.BTF), len(k612.BTF))
			}
			want := kernel.ID{Arch: "x86_64", Release: k612.ID.Release}
			if k.ID != want || k.Build != k612.Build || k.Banner == nil || *k.Banner != *k612.Banner {
				t.Errorf("ID %#v Build %q Banner %+v; want %#v %q", k.ID, k.Build, k.Banner, want, k612.Build)
			}
			if k.Source != "vmlinux ELF "+tt.path || k.Image != "" {
				t.Errorf("Source %q Image %q", k.Source, k.Image)
			}
		})
	}
}

// makeARM64Image returns a fake arm64 Image: the arm64 image header, some
// code, the banner and raw BTF, as the kernel lays them out in .rodata.
func makeARM64Image(raw []byte, banner string) []byte {
	img := make([]byte, 64<<10)
	binary.LittleEndian.PutUint32(img[0:], 0xfa405a4d) // "MZ" EFI stub, as Debian's
	binary.LittleEndian.PutUint64(img[16:], uint64(len(img)+len(raw)+4096))
	copy(img[arm64MagicOff:], arm64Magic)
	for i := 4096; i < len(img); i++ {
		img[i] = byte(i * 7)
	}
	img = append(img, []byte(banner+"\n\x00")...)
	img = append(img, make([]byte, 4096-len(img)%4096)...)
	img = append(img, raw...)
	return append(img, make([]byte, 4096)...)
}

// makeZboot returns an EFI zboot image with a payload compressed as comp.
func makeZboot(payload []byte, comp string) []byte {
	img := make([]byte, 4096)
	copy(img, "MZ")
	copy(img[4:], zbootMagic)
	binary.LittleEndian.PutUint32(img[zbootPayloadOff:], uint32(len(img)))
	binary.LittleEndian.PutUint32(img[zbootPayloadLen:], uint32(len(payload)))
	copy(img[zbootCompTypeOff:], comp)
	img = append(img, payload...)
	return binary.LittleEndian.AppendUint32(img, 123456) // size, as the build appends
}

func TestImportImage(t *testing.T) {
	k61 := debKernel(t, "6.1")
	dir := t.TempDir()
	tmp := t.TempDir()

	t.Run("bzImage", func(t *testing.T) {
		k := mustImportOne(t, k61.Image, Options{TempDir: tmp, KeepImage: true})
		defer os.Remove(k.Image)
		if !bytes.Equal(k.BTF, k61.BTF) || k.Build != k61.Build {
			t.Errorf("BTF equal %v, Build %q", bytes.Equal(k.BTF, k61.BTF), k.Build)
		}
		if want := (kernel.ID{Arch: "x86_64", Release: k61.ID.Release}); k.ID != want {
			t.Errorf("ID %#v, want %#v", k.ID, want)
		}
		if !strings.Contains(k.Source, "lz4 at offset") {
			t.Errorf("Source %q does not say lz4", k.Source)
		}
		img, err := os.ReadFile(k.Image)
		orig, err2 := os.ReadFile(k61.Image)
		if err != nil || err2 != nil || !bytes.Equal(img, orig) {
			t.Errorf("Image %s is not a copy of the input: %v %v", k.Image, err, err2)
		}
	})

	banner := "Linux version 6.1.0-50-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian 6.1.176-1 (2026-07-02)"
	image := makeARM64Image(k61.BTF, banner)
	for _, tt := range []struct {
		name string
		data []byte
		how  string
	}{
		{"arm64 Image", image, "arm64 Image"},
		{"arm64 Image.gz", gzipData(t, image), "gzip at offset 0"},
		{"arm64 zboot gzip", makeZboot(gzipData(t, image), "gzip"), "gzip at offset 4096, from the EFI zboot header"},
		{"xz", xzData(t, image), "xz at offset 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, strings.ReplaceAll(tt.name, " ", "-"), tt.data)
			k := mustImportOne(t, p, Options{TempDir: tmp})
			if !bytes.Equal(k.BTF, k61.BTF) {
				t.Error("BTF differs")
			}
			want := kernel.ID{Arch: "arm64", Release: "6.1.0-50-arm64"}
			if k.ID != want || k.Build != "#1 SMP Debian 6.1.176-1 (2026-07-02)" {
				t.Errorf("ID %#v Build %q", k.ID, k.Build)
			}
			if !strings.Contains(k.Source, tt.how) {
				t.Errorf("Source %q does not contain %q", k.Source, tt.how)
			}
		})
	}
	checkEmptyDir(t, tmp)
}
