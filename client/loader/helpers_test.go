//go:build linux

package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/bpfarm/bpfarm/bpfsrc/kconfig"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/bpfarm/bpfarm/btf/core"
)

// require reports that the test's requirement what is missing, for reason:
// it skips the test, or fails it under BPFARM_TEST_STRICT=1 (the rule of
// internal/testenv, which this package's tests don't import: it pulls in
// server packages).
func require(t testing.TB, what, reason string) {
	t.Helper()
	if v, err := strconv.ParseBool(os.Getenv("BPFARM_TEST_STRICT")); err == nil && v {
		t.Fatalf("%s unavailable: %s (BPFARM_TEST_STRICT=1: not skipping)", what, reason)
	}
	t.Skipf("%s unavailable: %s (skipping; BPFARM_TEST_STRICT=1 makes this fail)", what, reason)
}

// The live tests compile the examples (../../examples/NAME/NAME.bpf.c) and
// testdata/*.bpf.c with the real clang against a vmlinux.h generated once
// per run from the running kernel's BTF, relocate them with btf/core
// against the host's /sys/kernel/btf/vmlinux (for the artifacts' min_btf
// and relocated files), and load them into the running kernel. Every set
// gets a unique name, pins under a bpffs directory of this test binary and
// a state directory of its own, and is unloaded when its test ends.

var (
	// tools is set up once per test binary.
	toolsOnce sync.Once
	tools     struct {
		clang, bpftool string
		vmlinuxDir     string
		host           *core.Kernel
		what, why      string // a missing requirement
		err            error
	}
	// pinRoot is this test binary's bpffs directory.
	pinRoot = fmt.Sprintf("/sys/fs/bpf/bpfarm-loader-test-%d", os.Getpid())

	artifactsMu sync.Mutex
	artifacts   = map[string]*Artifact{}

	setCounter atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tools.vmlinuxDir != "" {
		os.RemoveAll(tools.vmlinuxDir)
	}
	os.RemoveAll(pinRoot)
	os.Exit(code)
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func setupTools() {
	var err error
	if tools.clang, err = lookTool("clang-19"); err != nil {
		tools.what, tools.why = "clang-19", err.Error()
		return
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		tools.what, tools.why = "libbpf-dev", err.Error()
		return
	}
	if tools.bpftool, err = lookTool("bpftool"); err != nil {
		tools.what, tools.why = "bpftool", err.Error()
		return
	}
	vmlinux, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		tools.what, tools.why = "kernel BTF", err.Error()
		return
	}
	if tools.host, err = core.LoadKernel("host", vmlinux, nil); err != nil {
		tools.err = err
		return
	}
	dir, err := os.MkdirTemp("", "loader-vmlinux-")
	if err != nil {
		tools.err = err
		return
	}
	tools.vmlinuxDir = dir
	out, err := exec.Command(tools.bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").Output()
	if err != nil {
		tools.err = fmt.Errorf("generate vmlinux.h: %w", err)
		return
	}
	tools.err = os.WriteFile(filepath.Join(dir, "vmlinux.h"), out, 0o644)
}

// requireTools skips t (fails it when strict) without clang, bpftool or
// kernel BTF.
func requireTools(t testing.TB) {
	t.Helper()
	toolsOnce.Do(setupTools)
	if tools.what != "" {
		require(t, tools.what, tools.why)
	}
	if tools.err != nil {
		t.Fatal(tools.err)
	}
}

// requireRoot skips t (fails it when strict) unless it can load BPF.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		require(t, "root", "loading BPF programs needs CAP_BPF and CAP_SYS_ADMIN")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		require(t, "memlock", err.Error())
	}
}

// skipHook skips t because this kernel lacks a hook: legitimate even when
// strict.
func skipHook(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Skipf("hook unavailable on this kernel: "+format, args...)
}

// source resolves a program name to its source: an example or testdata.
func source(name string) (dir, file string) {
	if _, err := os.Stat(filepath.Join("testdata", name+".bpf.c")); err == nil {
		return "testdata", name + ".bpf.c"
	}
	return filepath.Join("..", "..", "examples", name), name + ".bpf.c"
}

// compile compiles program name (an example or testdata/NAME.bpf.c).
func compile(t testing.TB, name string) []byte {
	t.Helper()
	requireTools(t)
	dir, file := source(name)
	out := filepath.Join(t.TempDir(), name+".o")
	var stderr bytes.Buffer
	cmd := exec.Command(tools.clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
		"-I"+tools.vmlinuxDir, "-c", file, "-o", out)
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

// artifact compiles program name and relocates it against the host's BTF,
// as the server would for this kernel. Artifacts are built once per test
// binary; each call returns a copy named for no set.
func artifact(t testing.TB, name string) *Artifact {
	t.Helper()
	requireTools(t)
	artifactsMu.Lock()
	defer artifactsMu.Unlock()
	if a, ok := artifacts[name]; ok {
		cpy := *a
		return &cpy
	}
	obj := compile(t, name)
	o, err := core.LoadObject(obj)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	res, err := o.Relocate(tools.host)
	if err != nil {
		t.Fatalf("relocate %s: %v", name, err)
	}
	a := &Artifact{Revision: "r1-" + name, Object: obj, MinBTF: res.MinBTF, Relocated: res.Relocated}
	artifacts[name] = a
	cpy := *a
	return &cpy
}

// uniqueName returns a set name unique to this test and process.
func uniqueName(t testing.TB) string {
	base := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")
	if len(base) > 60 {
		base = base[len(base)-60:]
	}
	return fmt.Sprintf("%s-%d-%d", strings.Trim(base, "-"), os.Getpid(), setCounter.Add(1))
}

// testOptions returns options with this binary's pin directory and a
// state directory of the test's own.
func testOptions(t testing.TB) Options {
	return Options{PinDir: pinRoot, StateDir: t.TempDir()}
}

// load loads a as a new set with a unique name and unloads it when t
// ends; it fails t on error.
func load(t testing.TB, a *Artifact, opt Options) *Loaded {
	t.Helper()
	l, err := tryLoad(t, a, opt)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return l
}

// tryLoad is load, returning the error.
func tryLoad(t testing.TB, a *Artifact, opt Options) (*Loaded, error) {
	t.Helper()
	requireRoot(t)
	if a.Name == "" {
		a.Name = uniqueName(t)
	}
	l, err := Load(t.Context(), a, opt)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		l.Close()
		if err := Unload(l.Name, opt); err != nil && !errors.Is(err, ErrNotLoaded) {
			t.Errorf("Unload %s: %v", l.Name, err)
		}
	})
	return l, nil
}

// pinnedMap opens map name of l from its pin.
func pinnedMap(t testing.TB, l *Loaded, name string) *ebpf.Map {
	t.Helper()
	ms := l.Map(name)
	if ms == nil {
		t.Fatalf("set %s has no map %s (maps: %v)", l.Name, name, l.Maps)
	}
	m, err := ebpf.LoadPinnedMap(ms.Pinned, nil)
	if err != nil {
		t.Fatalf("open map %s from its pin: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// counter reads the u64 at index 0 of array map name, through its pin.
func counter(t testing.TB, l *Loaded, name string) uint64 {
	t.Helper()
	var v uint64
	if err := pinnedMap(t, l, name).Lookup(uint32(0), &v); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return v
}

// global reads the u64 global variable name of the set's object a, through
// the pin of its section's map (.bss, .data).
func global(t testing.TB, l *Loaded, obj []byte, name string) uint64 {
	t.Helper()
	spec, _, err := kconfig.LoadSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := spec.Variables[name]
	if !ok {
		t.Fatalf("no global %s", name)
	}
	m := pinnedMap(t, l, v.SectionName)
	buf := make([]byte, m.ValueSize())
	if err := m.Lookup(uint32(0), &buf); err != nil {
		t.Fatalf("read %s: %v", v.SectionName, err)
	}
	return binary.NativeEndian.Uint64(buf[v.Offset:])
}

// openFiles opens a file n times, so that openat runs n times in this
// process.
func openFiles(t testing.TB, n int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range n {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// bpftoolProg is a program as bpftool prog show -j lists it.
type bpftoolProg struct {
	ID     uint32   `json:"id"`
	Type   string   `json:"type"`
	Name   string   `json:"name"`
	Tag    string   `json:"tag"`
	MapIDs []uint32 `json:"map_ids"`
}

// bpftoolProgs lists the kernel's programs with bpftool.
func bpftoolProgs(t testing.TB) []bpftoolProg {
	t.Helper()
	requireTools(t)
	out, err := exec.Command(tools.bpftool, "prog", "show", "-j").Output()
	if err != nil {
		t.Fatalf("bpftool prog show: %v", err)
	}
	var progs []bpftoolProg
	if err := json.Unmarshal(out, &progs); err != nil {
		t.Fatalf("bpftool prog show: %v", err)
	}
	return progs
}

// progsUsing returns the names of the programs bpftool lists that use any
// of the maps of l (programs of other sets and tests have other maps).
func progsUsing(t testing.TB, l *Loaded) map[uint32]string {
	t.Helper()
	ids := map[uint32]bool{}
	for _, m := range l.Maps {
		ids[m.ID] = true
	}
	out := map[uint32]string{}
	for _, p := range bpftoolProgs(t) {
		if slices.ContainsFunc(p.MapIDs, func(id uint32) bool { return ids[id] }) {
			out[p.ID] = p.Name
		}
	}
	return out
}

// inNewNetns locks the test's goroutine to its thread and moves the thread
// into a new network namespace with lo up. The thread is discarded when the
// test ends, and the namespace with it.
func inNewNetns(t *testing.T) {
	t.Helper()
	requireRoot(t)
	runtime.LockOSThread() // never unlocked: the thread dies with the test
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		require(t, "network namespaces", err.Error())
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
}
