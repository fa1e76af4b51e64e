package kconfig

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
)

// compile builds a BPF object from src with clang-19 and libbpf-dev's
// headers.
func compile(t *testing.T, src string) []byte {
	t.Helper()
	clang, err := exec.LookPath("clang-19")
	if err != nil {
		testenv.Require(t, "clang-19", err.Error())
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		testenv.Require(t, "libbpf-dev", err.Error())
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.bpf.c"), []byte(src), 0o644)
	out, err := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-idirafter", "/usr/include/x86_64-linux-gnu", "-c", filepath.Join(dir, "p.bpf.c"), "-o", filepath.Join(dir, "p.o")).CombinedOutput()
	if err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	obj, err := os.ReadFile(filepath.Join(dir, "p.o"))
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

const prog = `
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
typedef __u32 u32;
typedef u32 my_u32;
typedef _Bool mybool;
extern my_u32 LINUX_KERNEL_VERSION __kconfig;
extern mybool LINUX_HAS_BPF_COOKIE __kconfig;
extern mybool CONFIG_A __kconfig;
extern enum libbpf_tristate CONFIG_B __kconfig;
extern char CONFIG_C __kconfig;
extern short CONFIG_D __kconfig;
extern char CONFIG_E[4] __kconfig;
extern unsigned long long CONFIG_F __kconfig __weak;
extern int LINUX_UNKNOWN_WEAK __kconfig __weak;
__u64 out[9];
SEC("socket") int p(void *ctx) {
	out[0] = LINUX_KERNEL_VERSION; out[1] = LINUX_HAS_BPF_COOKIE; out[2] = CONFIG_A;
	out[3] = CONFIG_B; out[4] = CONFIG_C; out[5] = CONFIG_D; out[6] = CONFIG_E[1];
	out[7] = CONFIG_F; out[8] = LINUX_UNKNOWN_WEAK;
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
`

func TestValuesAsLibbpf(t *testing.T) {
	obj := compile(t, prog)
	spec, ext, err := LoadSpec(obj)
	if err != nil {
		t.Fatalf("LoadSpec (weak externs): %v", err)
	}
	if ext == nil || len(ext.Vars) != 9 {
		t.Fatalf("externs: %+v", ext)
	}
	kinds := map[string]Kind{}
	weak := map[string]bool{}
	for _, x := range ext.Vars {
		kinds[x.Name], weak[x.Name] = x.Kind, x.Weak
	}
	if kinds["LINUX_KERNEL_VERSION"] != KindInt || kinds["CONFIG_A"] != KindBool || kinds["CONFIG_B"] != KindTristate ||
		kinds["CONFIG_C"] != KindChar || kinds["CONFIG_E"] != KindCharArray || !weak["CONFIG_F"] || weak["CONFIG_A"] {
		t.Fatalf("kinds %v weak %v", kinds, weak)
	}
	host := Host{KernelVersion: 0x060112, HasBPFCookie: func() bool { return true },
		Config: []byte("# CONFIG_X is not set\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C=m\nCONFIG_D=-3\nCONFIG_E=\"abcdef\"\n")}
	data, err := ext.Values(host)
	if err != nil {
		t.Fatal(err)
	}
	at := func(name string) []byte {
		for _, x := range ext.Vars {
			if x.Name == name {
				return data[x.Offset : x.Offset+x.Size]
			}
		}
		t.Fatalf("no %s", name)
		return nil
	}
	if v := binary.NativeEndian.Uint32(at("LINUX_KERNEL_VERSION")); v != 0x060112 {
		t.Errorf("LINUX_KERNEL_VERSION %#x", v)
	}
	if at("LINUX_HAS_BPF_COOKIE")[0] != 1 || at("CONFIG_A")[0] != 1 || binary.NativeEndian.Uint32(at("CONFIG_B")) != 2 ||
		at("CONFIG_C")[0] != 'm' || int16(binary.NativeEndian.Uint16(at("CONFIG_D"))) != -3 ||
		!bytes.Equal(at("CONFIG_E"), []byte("abc\x00")) || binary.NativeEndian.Uint64(at("CONFIG_F")) != 0 {
		t.Errorf("values % x", data)
	}
	if err := ext.Apply(spec, data); err != nil {
		t.Fatal(err)
	}
	if m := spec.Maps[MapName]; m == nil || m.ValueSize != uint32(len(data)) {
		t.Fatalf("no %s map: %+v", MapName, spec.Maps)
	}

	for cfg, want := range map[string]string{
		"CONFIG_A=m\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=1\nCONFIG_E=\"x\"\n":     "CONFIG_A: value 'm' implies tristate",
		"CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=70000\nCONFIG_E=\"x\"\n": "CONFIG_D: value 70000 doesn't fit in 2 bytes",
		"CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_E=\"x\"\n":                 "CONFIG_D (strong): not resolved",
		"CONFIG_A=2\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=1\nCONFIG_E=\"x\"\n":     "CONFIG_A: value \"2\" implies integer type",
		"CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=1\nCONFIG_E=1\n":         "CONFIG_E: value \"1\" implies integer type",
		"CONFIG_A=y\nCONFIG_B=\"s\"\nCONFIG_C=y\nCONFIG_D=1\nCONFIG_E=\"x\"\n": "CONFIG_B: value \"s\" implies char array",
	} {
		host.Config = []byte(cfg)
		_, err := ext.Values(host)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: got %v, want %q", cfg, err, want)
		}
	}
}

func TestUnknownStrongLinuxExtern(t *testing.T) {
	obj := compile(t, `#include <linux/types.h>
#include <bpf/bpf_helpers.h>
extern int LINUX_NOT_A_THING __kconfig;
int out;
SEC("socket") int p(void *ctx) { out = LINUX_NOT_A_THING; return 0; }
char LICENSE[] SEC("license") = "GPL";`)
	_, ext, err := LoadSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ext.Values(Host{}); err == nil || !strings.Contains(err.Error(), "LINUX_NOT_A_THING: unrecognized virtual extern") {
		t.Fatalf("got %v", err)
	}
}

func TestKernelVersion(t *testing.T) {
	for _, c := range []struct {
		release, version, sig string
		want                  uint32
	}{
		{"6.18.44-fc-v1272", "#1 SMP", "", 6<<16 | 18<<8 | 44},
		{"4.19.0-22-amd64", "#1 SMP Debian 4.19.260-1 (2022-09-29)", "", 4<<16 | 19<<8 | 255},
		{"5.15.0-91-generic", "#101-Ubuntu", "Ubuntu 5.15.0-91.101-generic 5.15.131", 5<<16 | 15<<8 | 131},
	} {
		got, err := KernelVersion(c.release, c.version, c.sig)
		if err != nil || got != c.want {
			t.Errorf("%q %q: %#x %v, want %#x", c.release, c.version, got, err, c.want)
		}
	}
}
