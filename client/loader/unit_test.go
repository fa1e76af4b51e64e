//go:build linux

package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestSetValues checks how Set parses values for each kind of const
// volatile global (testdata/globals.bpf.c), without loading anything.
func TestSetValues(t *testing.T) {
	obj := compile(t, "globals")
	spec := func() *ebpf.CollectionSpec {
		s, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(obj))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	le := binary.NativeEndian
	u16 := func(v uint16) []byte { return le.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return le.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return le.AppendUint64(nil, v) }
	name := func(s string) []byte { b := make([]byte, 8); copy(b, s); return b }

	good := []struct {
		name, value string
		want        []byte
	}{
		{"g_u8", "255", []byte{255}},
		{"g_u8", "0xff", []byte{255}},
		{"g_s8", "-128", []byte{0x80}},
		{"g_u16", "65535", u16(65535)},
		{"g_s16", "-2", u16(0xfffe)},
		{"g_u32", "0xdeadbeef", u32(0xdeadbeef)},
		{"g_int", "-1", u32(0xffffffff)},
		{"g_int", "2147483647", u32(0x7fffffff)},
		{"g_u64", "18446744073709551615", u64(^uint64(0))},
		{"g_s64", "-9223372036854775808", u64(1 << 63)},
		{"g_bool", "true", []byte{1}},
		{"g_bool", "0", []byte{0}},
		{"g_level", "LEVEL_HIGH", u32(7)},
		{"g_level", "3", u32(3)},
		{"g_name", "bpfarm", name("bpfarm")},
		{"g_name", "", name("")},
	}
	for _, g := range good {
		s := spec()
		if err := applySet(s, map[string]string{g.name: g.value}); err != nil {
			t.Errorf("%s=%s: %v", g.name, g.value, err)
			continue
		}
		if got := s.Variables[g.name].Value; !bytes.Equal(got, g.want) {
			t.Errorf("%s=%s: value % x, want % x", g.name, g.value, got, g.want)
		}
	}

	bad := []struct {
		name, value, want string
	}{
		{"g_u8", "256", "out of range for an unsigned 8-bit integer (0..255)"},
		{"g_s8", "128", "out of range for a signed 8-bit integer (-128..127)"},
		{"g_u16", "-1", "out of range for an unsigned 16-bit integer"},
		{"g_int", "2147483648", "out of range for a signed 32-bit integer"},
		{"g_u32", "12abc", `"12abc" is not an integer`},
		{"g_bool", "maybe", `"maybe" is not a bool`},
		{"g_level", "LEVEL_MID", "is neither one of LEVEL_LOW, LEVEL_HIGH nor an integer"},
		{"g_name", "12345678", "does not fit in char[8]"},
		{"g_struct", "1", "can't set a variable of type"},
		{"counter", "1", "not a const volatile variable (it is in .bss"},
		{"nope", "1", "unknown variable: the object's const volatile variables are g_bool, g_int, g_level, g_name"},
	}
	for _, b := range bad {
		err := applySet(spec(), map[string]string{b.name: b.value})
		if err == nil || !strings.Contains(err.Error(), b.want) || !strings.HasPrefix(err.Error(), "set "+b.name+": ") {
			t.Errorf("%s=%s: error %v, want %q", b.name, b.value, err, b.want)
		}
	}
}

// TestHookErrors feeds synthetic kernel errors to the hook error mapping.
func TestHookErrors(t *testing.T) {
	none := hostFeatures{Tracefs: true, Uprobes: true, LSMs: "lockdown,capability,bpf"}
	all := hostFeatures{Kprobes: true, Uprobes: true, Tracefs: true, LSMs: "lockdown,capability,bpf"}
	noBPFLSM := all
	noBPFLSM.LSMs = "lockdown,capability,apparmor"
	cases := []struct {
		op, kind, target string
		err              error
		f                hostFeatures
		want             string
	}{
		{"attach", "kprobe", "do_sys_openat2", fmt.Errorf("open kprobe_events: %w", os.ErrNotExist), none,
			"attach kprobe/do_sys_openat2: this kernel has no kprobe support (CONFIG_KPROBES=n): "},
		{"attach", "ksyscall", "openat", syscall.ENOENT, none,
			"attach ksyscall/openat: this kernel has no kprobe support (CONFIG_KPROBES=n)"},
		{"attach", "kprobe", "no_such_fn", fmt.Errorf("symbol: %w", os.ErrNotExist), all,
			"attach kprobe/no_such_fn: no kernel function no_such_fn to probe"},
		{"attach", "kretprobe", "f", syscall.EPERM, all, "the kernel refused the kprobe"},
		{"attach", "kprobe.multi", "f*", fmt.Errorf("x: %w", ebpf.ErrNotSupported), all,
			"attach kprobe.multi/f*: this kernel has no kprobe.multi support"},
		{"attach", "kprobe.multi", "f*", syscall.ESRCH, all, "no kernel function matches f*"},
		{"load", "fentry", "do_unlinkat", fmt.Errorf("load program: %w", syscall.EPERM), all,
			"load fentry/do_unlinkat: the kernel refused a BPF trampoline (EPERM)"},
		{"load", "fexit", "x", errnoENOTSUPP, all, "this kernel has no BPF trampoline support"},
		{"load", "fmod_ret", "x", syscall.EINVAL, all, "x does not allow return value modification"},
		{"load", "fentry", "nope", syscall.ESRCH, all, "the kernel's BTF has no function nope"},
		{"load", "lsm", "file_open", syscall.EPERM, noBPFLSM, "the BPF LSM is not active"},
		{"load", "lsm", "file_open", syscall.EPERM, all, "refused a BPF trampoline"},
		{"load", "tp_btf", "sched_switch", syscall.EPERM, all, "refused the BTF tracepoint"},
		{"attach", "tp", "sched/nope", fmt.Errorf("x: %w", os.ErrNotExist), all, "this kernel has no tracepoint sched/nope"},
		{"attach", "tracepoint", "a/b", syscall.ENOENT, hostFeatures{}, "tracefs is not mounted at /sys/kernel/tracing"},
		{"attach", "raw_tp", "nope", syscall.ENOENT, all, "this kernel has no tracepoint nope"},
		{"attach", "uprobe", "/bin/x:f", fmt.Errorf("x: %w", os.ErrNotExist), all, "no such file or symbol: /bin/x:f"},
		{"attach", "uprobe", "/bin/x:f", syscall.ENOENT, hostFeatures{}, "no uprobe support (CONFIG_UPROBE_EVENTS=n)"},
		{"attach", "xdp", "", syscall.EBUSY, all, "attach xdp: another XDP program is attached"},
		{"attach", "xdp", "", syscall.EOPNOTSUPP, all, "try XDPMode \"generic\""},
		{"attach", "tc", "", fmt.Errorf("tcx: %w", ebpf.ErrNotSupported), all, "tc programs need tcx (Linux 6.6+) here"},
		{"attach", "perf_event", "", syscall.EACCES, all, "perf events are not allowed"},
		{"attach", "iter", "nope", syscall.EINVAL, all, "this kernel has no nope iterator"},
		{"attach", "sk_lookup", "", syscall.EOPNOTSUPP, all, "can't attach this program type to a network namespace"},
		{"attach", "cgroup", "sock_create", errnoENOTSUPP, all, "can't attach this cgroup program type"},
		{"attach", "struct_ops", "", errnoENOTSUPP, all, "not supported by this kernel"},
		{"attach", "tp", "a/b", syscall.EBADF, all, "attach tp/a/b: bad file descriptor"},
	}
	for _, c := range cases {
		err := explainHookError(c.op, c.kind, c.target, c.err, c.f)
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s/%s %v: %q, want %q", c.op, c.kind, c.target, c.err, err, c.want)
		}
		if !errors.Is(err, c.err) {
			t.Errorf("%s %s/%s: %v does not wrap %v", c.op, c.kind, c.target, err, c.err)
		}
	}

	// As a ProgramError, the hook error names the program.
	pe := &ProgramError{Program: "kp", Section: "kprobe/f", Op: "attach", Err: explainHookError("attach", "kprobe", "f", syscall.ENOENT, none)}
	if got, want := pe.Error(), "attach kprobe/f (program kp): this kernel has no kprobe support (CONFIG_KPROBES=n): no such file or directory"; got != want {
		t.Errorf("ProgramError = %q, want %q", got, want)
	}
}

// TestMountInfo checks the mountinfo parser and mount detection.
func TestMountInfo(t *testing.T) {
	data := []byte(`22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
42 22 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
43 22 0:22 /fs/bpf /sys/fs/bpf rw,relatime - sysfs sysfs rw
44 43 0:39 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700
45 1 0:40 / /mnt/with\040space rw shared:1 master:2 - tmpfs none rw
`)
	entries, err := parseMountInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 5 || entries[4].MountPoint != "/mnt/with space" || entries[4].FSType != "tmpfs" {
		t.Errorf("entries = %+v", entries)
	}
	if !mountedAt(entries, "/sys/fs/bpf", "bpf") || !mountedAt(entries, "/sys/kernel/tracing/", "tracefs") {
		t.Error("bpffs or tracefs not found")
	}
	if mountedAt(entries[:3], "/sys/fs/bpf", "bpf") {
		t.Error("a sysfs bind at /sys/fs/bpf taken for bpffs")
	}
	if mountedAt(entries, "/sys/kernel/debug", "debugfs") {
		t.Error("debugfs found")
	}
	if _, err := parseMountInfo([]byte("garbage\n")); err == nil {
		t.Error("garbage parsed")
	}

	// Live: with both mounted, ensuring them again is a no-op.
	requireRoot(t)
	for range 2 {
		if err := ensureBPFFS(pinRoot); err != nil {
			t.Fatal(err)
		}
		if err := ensureTracefs(); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := os.ReadFile(mountInfoPath)
	entries, _ = parseMountInfo(raw)
	var bpffs, tracefs int
	for _, e := range entries {
		switch {
		case e.MountPoint == bpffsDir && e.FSType == "bpf":
			bpffs++
		case e.MountPoint == tracefsDir && e.FSType == "tracefs":
			tracefs++
		}
	}
	if bpffs != 1 || tracefs != 1 {
		t.Errorf("%d bpffs and %d tracefs mounts, want 1 each", bpffs, tracefs)
	}
	if err := ensureBPFFS(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not on a bpf file system") {
		t.Errorf("pin directory on tmpfs: %v", err)
	}
}

// TestMountMissing mounts tracefs and bpffs where mountinfo says they are
// missing, in empty directories standing for /sys/kernel/tracing and
// /sys/fs/bpf, and unmounts them.
func TestMountMissing(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	info := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(info, []byte("22 1 0:21 / /sys rw - sysfs sysfs rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := mountInfoPath
	mountInfoPath = info
	t.Cleanup(func() { mountInfoPath = saved })

	target := filepath.Join(dir, "tracing")
	if err := ensureMount(target, "tracefs", ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil || st.Type != unix.TRACEFS_MAGIC {
		t.Errorf("tracefs not mounted at %s: %v", target, err)
	}
	bpf := filepath.Join(dir, "bpf")
	if err := ensureMount(bpf, "bpf", "mode=0700"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(bpf, unix.MNT_DETACH)
	if err := unix.Statfs(bpf, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("bpffs not mounted at %s: %v", bpf, err)
	}
}

// TestParsers checks the small parsers.
func TestParsers(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uprobeTarget
		err  bool
	}{
		{"/bin/bash:readline", uprobeTarget{path: "/bin/bash", symbol: "readline"}, false},
		{"/usr/lib/libc.so.6:malloc+0x10", uprobeTarget{path: "/usr/lib/libc.so.6", symbol: "malloc", offset: 16}, false},
		{"/bin/x:0x1234", uprobeTarget{path: "/bin/x", address: 0x1234}, false},
		{"/bin/x", uprobeTarget{}, true},
		{"/bin/x:", uprobeTarget{}, true},
		{"/bin/x:f+zz", uprobeTarget{}, true},
	} {
		got, err := parseUprobeTarget(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("parseUprobeTarget(%q) = %+v, %v", c.in, got, err)
		}
	}
	if s, off, err := parseSymbolOffset("do_sys_openat2+8"); s != "do_sys_openat2" || off != 8 || err != nil {
		t.Errorf("parseSymbolOffset = %s %d %v", s, off, err)
	}
	for in, want := range map[string][]int{"0": {0}, "0-3": {0, 1, 2, 3}, "0-1,4,6-7": {0, 1, 4, 6, 7}} {
		if got, err := parseCPUList(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseCPUList("3-1"); err == nil {
		t.Error("3-1 parsed")
	}
	if got := syscallSymbols("openat"); got[len(got)-1] != "sys_openat" {
		t.Errorf("syscallSymbols = %v", got)
	}
	funcs := "do_sys_open\ndo_sys_openat2\ndo_sys_openat2\nvfs_open [ext4]\n"
	if got, err := matchFunctions(strings.NewReader(funcs), "do_sys_open*", false); err != nil || !slices.Equal(got, []string{"do_sys_open", "do_sys_openat2"}) {
		t.Errorf("matchFunctions = %v, %v", got, err)
	}
	kallsyms := "ffffffff81000000 T do_sys_openat2\nffffffff81000010 d do_sys_open_data\nffffffff81000020 t vfs_open\t[ext4]\n"
	if got, err := matchFunctions(strings.NewReader(kallsyms), "*open*", true); err != nil || !slices.Equal(got, []string{"do_sys_openat2", "vfs_open"}) {
		t.Errorf("matchFunctions(kallsyms) = %v, %v", got, err)
	}
	if _, err := matchFunctions(strings.NewReader(funcs), "nope*", false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no match: %v", err)
	}
	for _, n := range []string{"ok", "a_b-c", "x1", "a.b"} {
		if err := checkName(n); err != nil {
			t.Errorf("checkName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", ".a", "-a", "a/b", "a@b", "a~b", strings.Repeat("a", 129)} {
		if err := checkName(n); err == nil {
			t.Errorf("checkName(%q) accepted", n)
		}
	}
	if pinName(".rodata.str1.1") != "_rodata_str1_1" {
		t.Errorf("pinName = %s", pinName(".rodata.str1.1"))
	}
}

// TestVerifierErrorIsNotAHookProblem: a verifier rejection is explained by
// its log, never as a missing or refused hook.
func TestVerifierErrorIsNotAHookProblem(t *testing.T) {
	ve := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"0: R1 invalid mem access 'scalar'"}}
	for _, kind := range []string{"tp_btf", "fentry", "kprobe", "tracepoint", "lsm"} {
		if why := hookProblem(kind, "x", ve, hostFeatures{}); why != "" {
			t.Errorf("%s: verifier error explained as %q", kind, why)
		}
	}
}
