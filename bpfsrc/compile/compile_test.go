package compile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/headerset"
	"github.com/bpfarm/bpfarm/bpfsrc/records"
)

// checkNoPaths fails if text names a sandbox or host path.
func checkNoPaths(t *testing.T, c *Compiler, what, text string) {
	t.Helper()
	for _, p := range []string{"/src", "/farm", "/out", c.cfg.WorkDir, os.TempDir() + "/", c.cfg.Headers.Dir(), c.resourceDir, "/usr/lib"} {
		if strings.Contains(text, p) {
			t.Errorf("%s names %q:\n%s", what, p, text)
		}
	}
}

func checkResultPaths(t *testing.T, c *Compiler, res *Result) {
	t.Helper()
	checkNoPaths(t, c, "log", res.Log)
	checkNoPaths(t, c, "command", strings.Join(res.Command, " "))
	for _, d := range res.Diagnostics {
		checkNoPaths(t, c, "diagnostic", d.String())
	}
}

func checkErrorPaths(t *testing.T, c *Compiler, e *Error) {
	t.Helper()
	checkNoPaths(t, c, "log", e.Log)
	checkNoPaths(t, c, "reason", e.Reason)
	for _, d := range e.Diagnostics {
		checkNoPaths(t, c, "diagnostic", d.String())
	}
}

// programSections returns the executable sections of a BPF object: the
// program instructions.
func programSections(t *testing.T, obj []byte) map[string][]byte {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_BPF {
		t.Fatalf("machine %v, want EM_BPF", f.Machine)
	}
	progs := make(map[string][]byte)
	for _, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_EXECINSTR != 0 {
			data, err := s.Data()
			if err != nil {
				t.Fatal(err)
			}
			progs[s.Name] = data
		}
	}
	return progs
}

func TestCompileCORE(t *testing.T) {
	c := newCompiler(t, nil)
	res := compileOK(t, c, Request{Bundle: typicalProgram(t)})
	progs := programSections(t, res.Object)
	for _, name := range []string{"tp/sched/sched_process_exec", "tp/sched/sched_process_exit"} {
		if len(progs[name]) == 0 {
			t.Errorf("no program in section %s; sections %v", name, slices.Collect(mapsKeys(progs)))
		}
	}
	f, _ := elf.NewFile(bytes.NewReader(res.Object))
	for _, name := range []string{".maps", ".BTF", ".BTF.ext", "license"} {
		if f.Section(name) == nil {
			t.Errorf("no section %s", name)
		}
	}
	if f.Section(".debug_info") != nil {
		t.Error("DWARF .debug_info left in the object (it is stripped by default)")
	}
	if res.UsedPCH {
		t.Error("UsedPCH without Config.UsePCH")
	}
	want := []string{"clang", "-I", ".", "-O2"}
	if !slices.Equal(res.Command[:4], want) || !slices.Contains(res.Command, "prog.bpf.c") {
		t.Errorf("command %q", res.Command)
	}
	checkResultPaths(t, c, res)
	t.Logf("%s: %d bytes in %v; command %q", c.Version(), len(res.Object), res.Duration, res.Command)
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestSyntaxError(t *testing.T) {
	c := newCompiler(t, nil)
	src := "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\nSEC(\"xdp\")\nint prog(void *ctx)\n{\n\treturn x;\n}\n"
	e := compileErr(t, c, Request{Bundle: bundle(t, "entry.bpf.c", src)})
	want := "entry.bpf.c:7:9: error: use of undeclared identifier 'x'"
	if e.Reason != want {
		t.Errorf("reason %q, want %q", e.Reason, want)
	}
	if got := e.Error(); got != "compile failed: "+want {
		t.Errorf("Error() = %q", got)
	}
	if len(e.Diagnostics) == 0 || e.Diagnostics[0] != (bpfsrc.Diagnostic{File: "entry.bpf.c", Line: 7, Column: 9, Severity: "error", Message: "use of undeclared identifier 'x'"}) {
		t.Errorf("diagnostics %+v", e.Diagnostics)
	}
	if !strings.Contains(e.Log, "entry.bpf.c:7:9: error") {
		t.Errorf("log:\n%s", e.Log)
	}
	checkErrorPaths(t, c, e)
}

func TestErrorInUserHeader(t *testing.T) {
	c := newCompiler(t, nil)
	header := "#pragma once\nstatic int f(void) { return undefined_thing; }\n"
	for _, inc := range []string{`"../include/defs.h"`, `<include/defs.h>`} {
		t.Run(inc, func(t *testing.T) {
			e := compileErr(t, c, Request{Bundle: bundle(t,
				"progs/x.bpf.c", "#include "+inc+"\nint y;\n",
				"include/defs.h", header)})
			if len(e.Diagnostics) == 0 {
				t.Fatalf("no diagnostics; log:\n%s", e.Log)
			}
			d := e.Diagnostics[0]
			if d.File != "include/defs.h" || d.Line != 2 || d.Severity != "error" {
				t.Errorf("diagnostic %+v, want in include/defs.h:2", d)
			}
			if !strings.Contains(e.Log, "In file included from progs/x.bpf.c:1:") {
				t.Errorf("log has no include context:\n%s", e.Log)
			}
			checkErrorPaths(t, c, e)
		})
	}
}

func TestFarmHeaderInDiagnostics(t *testing.T) {
	c := newCompiler(t, nil)
	src := "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\nstruct task_struct { int x; };\n"
	e := compileErr(t, c, Request{Bundle: bundle(t, "x.bpf.c", src)})
	var note *bpfsrc.Diagnostic
	for i, d := range e.Diagnostics {
		if d.Severity == "note" {
			note = &e.Diagnostics[i]
			break
		}
	}
	if note == nil || note.File != "<farm>/vmlinux.h" {
		t.Errorf("want a note in <farm>/vmlinux.h, got %+v\n%s", e.Diagnostics, e.Log)
	}
	checkErrorPaths(t, c, e)

	// A farm header named in an include context.
	e = compileErr(t, c, Request{Bundle: bundle(t, "x.bpf.c", "#define __u32 int int int\n#include <linux/bpf.h>\n")})
	if !strings.Contains(e.Log, "<farm>/linux/") {
		t.Errorf("log does not name <farm>/linux/...:\n%s", e.Log)
	}
	checkErrorPaths(t, c, e)
}

func TestUserHeaderWins(t *testing.T) {
	c := newCompiler(t, nil)
	src := "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#ifndef USER_HELPERS\n#error the farm's bpf_helpers.h was used\n#endif\nint x;\n"
	res := compileOK(t, c, Request{Bundle: bundle(t, "x.bpf.c", src, "bpf/bpf_helpers.h", "#define USER_HELPERS 1\n")})
	checkResultPaths(t, c, res)

	// Without the bundle's header, the farm's is found.
	src = "#include <linux/types.h>\n#include <bpf/bpf_helpers.h>\n#include <linux/bpf.h>\n#include <asm/byteorder.h>\n#ifndef SEC\n#error no SEC\n#endif\nint x;\n"
	compileOK(t, c, Request{Bundle: bundle(t, "x.bpf.c", src)})
}

func TestWarnings(t *testing.T) {
	c := newCompiler(t, nil)
	src := "int f(void) { int unused; return 0; }\n"
	res := compileOK(t, c, Request{Bundle: bundle(t, "w.bpf.c", src), Flags: []string{"-Wall"}})
	if len(res.Diagnostics) != 1 || res.Diagnostics[0].Severity != "warning" || res.Diagnostics[0].File != "w.bpf.c" || res.Diagnostics[0].Line != 1 {
		t.Errorf("diagnostics %+v\n%s", res.Diagnostics, res.Log)
	}
	e := compileErr(t, c, Request{Bundle: bundle(t, "w.bpf.c", src), Flags: []string{"-Wall", "-Werror"}})
	if !strings.HasPrefix(e.Reason, "w.bpf.c:1:") {
		t.Errorf("reason %q", e.Reason)
	}
	// User macros and -O reach clang.
	src = "#if !defined(A) || B != 3 || defined(__TARGET_ARCH_x86)\n#error flags not applied\n#endif\nint x;\n"
	compileOK(t, c, Request{Bundle: bundle(t, "w.bpf.c", src), Flags: []string{"-DA", "-DB=3", "-U__TARGET_ARCH_x86", "-O3", "-std=gnu11", "-g"}})
}

func TestRefusedRequests(t *testing.T) {
	c := newCompiler(t, nil)
	b := bundle(t, "x.bpf.c", "int x;\n")
	for _, flag := range refusedFlags {
		e := compileErr(t, c, Request{Bundle: b, Flags: []string{"-Wall", flag}})
		if !strings.Contains(e.Reason, "flag ") || strings.Contains(e.Error(), "\n") {
			t.Errorf("flag %q: %q", flag, e.Error())
		}
	}
	e := compileErr(t, c, Request{Bundle: b, Arch: "mips"})
	if !strings.Contains(e.Reason, `"mips"`) {
		t.Errorf("arch mips: %v", e)
	}
	e = compileErr(t, c, Request{Bundle: b, Arch: ArchArm64})
	if !strings.Contains(e.Reason, "arm64") {
		t.Errorf("arch arm64: %v", e)
	}
	t.Logf("arm64: %v", e)
}

func TestConcurrentCompiles(t *testing.T) {
	c := newCompiler(t, func(cfg *Config) { cfg.UsePCH = true })
	prog := typicalProgram(t)
	other := bundle(t, "o.bpf.c", "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\nSEC(\"xdp\") int p(struct xdp_md *ctx) { return XDP_PASS; }\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n")
	const n = 6
	var wg sync.WaitGroup
	objs := make([][]byte, n)
	errs := make([]error, n)
	used := make([]bool, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := prog
			if i%2 == 1 {
				b = other
			}
			res, err := c.Compile(context.Background(), Request{Bundle: b, Arch: ArchX86_64})
			if err != nil {
				errs[i] = err
				return
			}
			objs[i] = res.Object
			used[i] = res.UsedPCH
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			var ce *Error
			if errors.As(errs[i], &ce) {
				t.Fatalf("compile %d: %v\n%s", i, errs[i], ce.Log)
			}
			t.Fatalf("compile %d: %v", i, errs[i])
		}
		if !bytes.Equal(objs[i], objs[i%2]) {
			t.Errorf("compile %d gave a different object than compile %d (used PCH %v, %v)", i, i%2, used[i], used[i%2])
		}
	}
	entries, _ := os.ReadDir(c.cfg.WorkDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "job-") {
			t.Errorf("job directory %s left behind", e.Name())
		}
	}
}

func TestPCH(t *testing.T) {
	plain := newCompiler(t, nil)
	pch := newCompiler(t, func(cfg *Config) { cfg.UsePCH = true })
	prog := typicalProgram(t)

	want := compileOK(t, plain, Request{Bundle: prog})
	got := compileOK(t, pch, Request{Bundle: prog})
	if want.UsedPCH || !got.UsedPCH {
		t.Fatalf("UsedPCH: plain %v, pch %v", want.UsedPCH, got.UsedPCH)
	}
	if !slices.Contains(got.Command, "-include-pch") || !slices.Contains(got.Command, "<farm>/vmlinux.h.pch") {
		t.Errorf("command %q", got.Command)
	}
	checkResultPaths(t, pch, got)
	wp, gp := programSections(t, want.Object), programSections(t, got.Object)
	if len(wp) == 0 || len(wp) != len(gp) {
		t.Fatalf("program sections: plain %d, pch %d", len(wp), len(gp))
	}
	for name, insns := range wp {
		if !bytes.Equal(insns, gp[name]) {
			t.Errorf("section %s differs with the precompiled header", name)
		}
	}
	t.Logf("objects identical: %v (plain %d bytes, pch %d bytes)", bytes.Equal(want.Object, got.Object), len(want.Object), len(got.Object))

	// Compiles the precompiled header is not safe for.
	cases := []struct {
		name  string
		b     *bpfsrc.Bundle
		flags []string
	}{
		{"macro flag", prog, []string{"-DBPF_NO_PRESERVE_ACCESS_INDEX"}},
		{"undef flag", prog, []string{"-UFOO"}},
		{"std flag", prog, []string{"-std=gnu11"}},
		{"define first", bundle(t, "x.bpf.c", "#define BPF_NO_PRESERVE_ACCESS_INDEX\n#include \"vmlinux.h\"\nint x;\n"), nil},
		{"comment continues", bundle(t, "x.bpf.c", "// a \\\n#include \"vmlinux.h\"\n#include \"vmlinux.h\"\nint x;\n"), nil},
		{"own vmlinux.h", bundle(t, "x.bpf.c", "#include \"vmlinux.h\"\nint x = MINE;\n", "vmlinux.h", "#define MINE 1\n"), nil},
	}
	for _, tc := range cases {
		res := compileOK(t, pch, Request{Bundle: tc.b, Flags: tc.flags})
		if res.UsedPCH {
			t.Errorf("%s: precompiled header used", tc.name)
		}
	}
	// -O and warnings keep it.
	res := compileOK(t, pch, Request{Bundle: prog, Flags: []string{"-O3", "-Wall", "-Werror"}})
	if !res.UsedPCH {
		t.Error("-O3 -Wall -Werror: precompiled header not used")
	}
	// Errors with the precompiled header are the user's as without it.
	src := "/* x */\n#include <vmlinux.h>\nint f(void) { return nope; }\n"
	e1 := compileErr(t, plain, Request{Bundle: bundle(t, "x.bpf.c", src)})
	e2 := compileErr(t, pch, Request{Bundle: bundle(t, "x.bpf.c", src)})
	if e1.Reason != e2.Reason {
		t.Errorf("reason without PCH %q, with %q", e1.Reason, e2.Reason)
	}
	checkErrorPaths(t, pch, e2)
}

func TestPCHFallback(t *testing.T) {
	_, v := farm(t)
	c := newCompiler(t, func(cfg *Config) { cfg.UsePCH = true })
	prog := typicalProgram(t)
	compileOK(t, c, Request{Bundle: prog}) // builds the header
	path, _, err := v.VmlinuxH(context.Background(), ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	pchs, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.pch"))
	if len(pchs) == 0 {
		t.Fatal("no precompiled header next to vmlinux.h")
	}
	// A corrupt header is refused by clang; the compile goes on without.
	c2 := newCompiler(t, func(cfg *Config) { cfg.UsePCH = true; cfg.Vmlinux = &copiedVmlinux{tb: t, src: path} })
	res := compileOK(t, c2, Request{Bundle: prog})
	if !res.UsedPCH {
		t.Fatal("precompiled header not used")
	}
	cv := c2.cfg.Vmlinux.(*copiedVmlinux)
	corrupt, _ := filepath.Glob(filepath.Join(cv.dir, "*.pch"))
	if len(corrupt) != 1 {
		t.Fatalf("precompiled headers %v", corrupt)
	}
	if err := os.WriteFile(corrupt[0], []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = compileOK(t, c2, Request{Bundle: prog})
	if res.UsedPCH {
		t.Error("corrupt precompiled header reported as used")
	}
	checkResultPaths(t, c2, res)
}

// copiedVmlinux provides a private copy of vmlinux.h.
type copiedVmlinux struct {
	tb     testing.TB
	src    string
	once   sync.Once
	dir    string
	digest string
}

func (v *copiedVmlinux) VmlinuxH(ctx context.Context, arch string) (string, string, error) {
	v.once.Do(func() {
		v.dir = v.tb.TempDir()
		data, err := os.ReadFile(v.src)
		if err != nil {
			v.tb.Error(err)
			return
		}
		sum := sha256.Sum256(data)
		v.digest = hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(v.dir, "vmlinux.h"), data, 0o644); err != nil {
			v.tb.Error(err)
		}
	})
	return filepath.Join(v.dir, "vmlinux.h"), v.digest, nil
}

func TestFingerprint(t *testing.T) {
	c := newCompiler(t, nil)
	f1, err := c.Fingerprint(context.Background(), ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := newCompiler(t, func(cfg *Config) { cfg.UsePCH = true }).Fingerprint(context.Background(), ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	if f1 != f2 || len(f1) != 64 {
		t.Errorf("fingerprints %q, %q", f1, f2)
	}
	if _, err := c.Fingerprint(context.Background(), ArchArm64); !errors.Is(err, ErrUnsupportedArch) {
		t.Errorf("arm64: %v", err)
	}
	if !strings.Contains(c.Version(), "clang version") {
		t.Errorf("version %q", c.Version())
	}
}

func TestBareMatchesSandbox(t *testing.T) {
	bare := newCompiler(t, func(cfg *Config) { cfg.NoSandbox = true })
	sb := newCompiler(t, nil)
	prog := typicalProgram(t)
	rb := compileOK(t, bare, Request{Bundle: prog})
	rs := compileOK(t, sb, Request{Bundle: prog})
	bp, sp := programSections(t, rb.Object), programSections(t, rs.Object)
	for name, insns := range sp {
		if !bytes.Equal(insns, bp[name]) {
			t.Errorf("section %s differs between bare and sandboxed clang", name)
		}
	}
	checkResultPaths(t, bare, rb)

	e := compileErr(t, bare, Request{Bundle: bundle(t, "x.bpf.c", "#include \"inc/a.h\"\n", "inc/a.h", "int x = y;\n")})
	if e.Diagnostics[0].File != "inc/a.h" {
		t.Errorf("bare: diagnostics %+v", e.Diagnostics)
	}
	checkErrorPaths(t, bare, e)
}

// TestPerKernelTarget: a per-kernel compile sees that kernel's vmlinux.h
// and its LINUX_VERSION_CODE, ahead of the UAPI headers' version.h.
func TestPerKernelTarget(t *testing.T) {
	_, v := farm(t)
	host, digest, err := v.VmlinuxH(context.Background(), ArchX86_64)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	vm, err := os.ReadFile(host)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinux.h"), vm, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "linux"), 0o755)
	const code = 0x0501FF // KERNEL_VERSION(5, 1, 255)
	version := fmt.Sprintf("#define LINUX_VERSION_CODE %d\n#define KERNEL_VERSION(a,b,c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n", code)
	if err := os.WriteFile(filepath.Join(dir, "linux", "version.h"), []byte(version), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `#include "vmlinux.h"
#include <linux/version.h>
#include <bpf/bpf_helpers.h>
_Static_assert(LINUX_VERSION_CODE == KERNEL_VERSION(5, 1, 255), "per-kernel LINUX_VERSION_CODE");
SEC("tp/syscalls/sys_enter_getpid") int p(void *ctx) { return 0; }
char LICENSE[] SEC("license") = "GPL";
`
	for _, pch := range []bool{false, true} {
		c := newCompiler(t, func(cfg *Config) { cfg.UsePCH = pch })
		res, err := c.Compile(context.Background(), Request{Bundle: bundle(t, "k.bpf.c", src), Arch: ArchX86_64,
			Kernel: &Target{Dir: dir, Digest: digest + "+kver"}})
		if err != nil {
			t.Fatalf("pch=%v: %v", pch, err)
		}
		checkResultPaths(t, c, res)
	}
	// Without the target, the UAPI headers' version.h is used: the assertion fails.
	c := newCompiler(t, nil)
	_, err = c.Compile(context.Background(), Request{Bundle: bundle(t, "k.bpf.c", src), Arch: ArchX86_64})
	var cerr *Error
	if !errors.As(err, &cerr) || !strings.Contains(cerr.Reason, "per-kernel LINUX_VERSION_CODE") {
		t.Fatalf("without target: %v", err)
	}
}

// <bpfarm.h> is the farm's: BPFARM_RECORD names a ring buffer's record
// type in BTF only.
func TestFarmHeader(t *testing.T) {
	c := newCompiler(t, nil)
	src := `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpfarm.h>
struct event { int pid; char comm[16]; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } events SEC(".maps");
BPFARM_RECORD(events, struct event);
SEC("tp/sched/sched_process_exec") int p(void *ctx) {
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) bpf_ringbuf_submit(e, 0);
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
`
	res := compileOK(t, c, Request{Bundle: bundle(t, "r.bpf.c", src)})
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(res.Object))
	if err != nil {
		t.Fatal(err)
	}
	r := records.Find(spec)["events"]
	if r == nil || r.Origin != records.Declared || r.Type == nil || r.Type.TypeName() != "event" {
		t.Fatalf("record %+v", r)
	}

	// With an imported libbpf header set too.
	files, err := headerset.ReadDir("/usr/include/bpf")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := headerset.New(files)
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.cfg.Headers.InstallSet(hs)
	if err != nil {
		t.Fatal(err)
	}
	compileOK(t, c, Request{Bundle: bundle(t, "r.bpf.c", src), Libbpf: set})
}
