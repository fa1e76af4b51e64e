package loader

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bpfarm/bpfarm/btf/core"
)

// compileRealworld compiles internal/realworld/programs/NAME with the
// libbpf headers under include (holding bpf/), as the farm does.
func compileRealworld(t testing.TB, name, include string, defines ...string) []byte {
	t.Helper()
	requireTools(t)
	dir := filepath.Join("..", "..", "internal", "realworld", "programs", name)
	out := filepath.Join(t.TempDir(), name+".o")
	args := []string{"-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I" + tools.vmlinuxDir,
		"-idirafter", include, "-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu"}
	args = append(args, defines...)
	args = append(args, "-c", name+".bpf.c", "-o", out)
	var stderr bytes.Buffer
	cmd := exec.Command(tools.clang, args...)
	cmd.Dir = dir
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("compile %s: %v\n%s", name, err, stderr.String())
	}
	obj, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// realworldArtifact compiles a realworld program and relocates it against
// the host's BTF, as the server would.
func realworldArtifact(t testing.TB, name, include string, defines ...string) *Artifact {
	t.Helper()
	obj := compileRealworld(t, name, include, defines...)
	o, err := core.LoadObject(obj)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	res, err := o.Relocate(tools.host)
	if err != nil {
		t.Fatalf("relocate %s: %v", name, err)
	}
	return &Artifact{Revision: "r1-" + name, Object: obj, MinBTF: res.MinBTF, Relocated: res.Relocated}
}

// TestKconfigExterns: .kconfig externs as libbpf resolves them — a
// typedef'd LINUX_KERNEL_VERSION, LINUX_HAS_BPF_COOKIE, bool, tristate,
// int, __weak u64, char array, and a __weak option no kernel has — load,
// run (BPF_PROG_TEST_RUN) and hold the host config's values; bpftool loads
// the same object.
func TestKconfigExterns(t *testing.T) {
	a := realworldArtifact(t, "kconfig", "/usr/include")
	cfg := hostKconfig(t)
	for _, mode := range []Mode{ModeHostBTF, ModeMinBTF, ModeRelocated} {
		t.Run(string(mode), func(t *testing.T) {
			opt := testOptions(t)
			opt.NoAttach = true
			opt.Mode = mode
			l := load(t, a, opt)
			ps := l.Program("record")
			if ps == nil {
				t.Fatalf("no program record: %+v", l.Programs)
			}
			prog, err := ebpf.LoadPinnedProgram(ps.Pinned, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
				t.Fatalf("test run: %v", err)
			}
			m := pinnedMap(t, l, ".bss")
			buf := make([]byte, m.ValueSize())
			if err := m.Lookup(uint32(0), &buf); err != nil {
				t.Fatal(err)
			}
			u32 := func(off int) uint32 { return binary.NativeEndian.Uint32(buf[off:]) }
			u64 := func(off int) uint64 { return binary.NativeEndian.Uint64(buf[off:]) }
			var uts unix.Utsname
			unix.Uname(&uts)
			wantKV, err := kconfig.KernelVersion(unix.ByteSliceToString(uts.Release[:]), unix.ByteSliceToString(uts.Version[:]), "")
			if err != nil {
				t.Fatal(err)
			}
			hz, _ := strconv.ParseUint(cfg["CONFIG_HZ"], 10, 64)
			cpus, _ := strconv.ParseUint(cfg["CONFIG_NR_CPUS"], 10, 64)
			tri := map[string]uint32{"y": 1, "m": 2, "": 0}[cfg["CONFIG_BPF_JIT"]]
			host := strings.Trim(cfg["CONFIG_DEFAULT_HOSTNAME"], `"`)
			cookie := uint32(0)
			if features.HaveProgramHelper(ebpf.TracePoint, asm.FnGetAttachCookie) == nil {
				cookie = 1
			}
			// struct values: u32 kernel_version, has_bpf_cookie,
			// bpf_syscall, bpf_jit; u64 hz, nr_cpus; u32
			// no_such_option; char hostname[16].
			got := []uint64{uint64(u32(0)), uint64(u32(4)), uint64(u32(8)), uint64(u32(12)), u64(16), u64(24), uint64(u32(32))}
			want := []uint64{uint64(wantKV), uint64(cookie), 1, uint64(tri), hz, cpus, 0}
			if !slices.Equal(got, want) || hz == 0 || cpus == 0 {
				t.Errorf("values %v, want %v (kernel version, bpf cookie, BPF_SYSCALL, BPF_JIT, HZ, NR_CPUS, no such option)", got, want)
			}
			if name := unix.ByteSliceToString(buf[36:52]); name != host {
				t.Errorf("CONFIG_DEFAULT_HOSTNAME %q, want %q", name, host)
			}
		})
	}
	bpftoolLoadall(t, a.Object)
}

// hostKconfig reads the running kernel's config.
func hostKconfig(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		require(t, "/proc/config.gz", err.Error())
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := make(map[string]string)
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg
}

// bpftoolLoadall loads obj with `bpftool prog loadall` (libbpf) and fails t
// if it refuses.
func bpftoolLoadall(t testing.TB, obj []byte) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "prog.o")
	if err := os.WriteFile(path, obj, 0o644); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(pinRoot, "bpftool-"+uniqueName(t))
	defer os.RemoveAll(pin)
	out, err := exec.Command(tools.bpftool, "prog", "loadall", path, pin).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool prog loadall: %v\n%s", err, out)
	}
}

// buildUSDTTarget compiles internal/realworld/programs/usdt/target.c (a
// SystemTap probe with a semaphore, from systemtap-sdt-dev's sys/sdt.h)
// with compiler.
func buildUSDTTarget(t *testing.T, compiler string) string {
	t.Helper()
	cc, err := exec.LookPath(compiler)
	if err != nil {
		require(t, compiler, err.Error())
	}
	if _, err := os.Stat("/usr/include/x86_64-linux-gnu/sys/sdt.h"); err != nil {
		if _, err := os.Stat("/usr/include/sys/sdt.h"); err != nil {
			require(t, "systemtap-sdt-dev", "no sys/sdt.h")
		}
	}
	bin := filepath.Join(t.TempDir(), "usdt-target-"+compiler)
	out, err := exec.Command(cc, "-O2", "-o", bin, filepath.Join("..", "..", "internal", "realworld", "programs", "usdt", "target.c")).CombinedOutput()
	if err != nil {
		t.Fatalf("%s target.c: %v\n%s", compiler, err, out)
	}
	return bin
}

// runTarget runs the USDT target for n ticks and returns how many it saw
// enabled (its semaphore set).
func runTarget(t *testing.T, bin string, n int) int {
	t.Helper()
	out, err := exec.Command(bin, strconv.Itoa(n)).Output()
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("%s printed %q", bin, out)
	}
	return v
}

// TestUSDT: a USDT program (usdt.bpf.h, BPF_USDT) loaded by the agent is
// attached to every site of bpfarm:tick in a real binary from its
// .note.stapsdt notes; the probe's semaphore counts the tracer; the
// arguments — a register, memory operands, a 32-bit negative — arrive as
// the binary passed them. With gcc's and clang's operand choices, and with
// the libbpf 1.1 and 1.5 headers.
func TestUSDT(t *testing.T) {
	requireRoot(t)
	includes := map[string]string{"libbpf-1.1": "/usr/include"}
	newer := testenv.LibbpfHeaders(t)
	inc := filepath.Join(t.TempDir(), "inc")
	os.MkdirAll(inc, 0o755)
	if err := os.Symlink(newer, filepath.Join(inc, "bpf")); err != nil {
		t.Fatal(err)
	}
	includes["libbpf-1.5"] = inc
	for _, compiler := range []string{"gcc", "clang-19"} {
		bin := buildUSDTTarget(t, compiler)
		for hdr, include := range includes {
			t.Run(compiler+"/"+hdr, func(t *testing.T) {
				if got := runTarget(t, bin, 3); got != 0 {
					t.Fatalf("before attaching, the semaphore is set %d times", got)
				}
				a := realworldArtifact(t, "usdt", include, `-DTARGET="`+bin+`"`)
				l := load(t, a, testOptions(t))
				if ps := l.Program("tick"); ps == nil || len(ps.Links) == 0 {
					t.Fatalf("tick not attached: %+v", l.Programs)
				}
				if got := runTarget(t, bin, 5); got != 5 {
					t.Fatalf("attached: the target saw its semaphore set %d times, want 5", got)
				}
				vals := map[string]uint64{}
				for _, v := range []string{"hits", "sum_seq", "last_seq", "last_value", "last_neg", "arg_count"} {
					vals[v] = global(t, l, a.Object, v)
				}
				want := map[string]uint64{"hits": 5, "sum_seq": 15, "last_seq": 5, "last_value": 5000,
					"last_neg": uint64(0xffffffff_fffffffb), "arg_count": 3}
				if !maps.Equal(vals, want) {
					t.Fatalf("globals %v, want %v", vals, want)
				}
			})
		}
	}
}
