package core

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/internal/testenv"
)

// The tests compile the examples (../../examples/*/, except broken) and
// testdata/*.bpf.c with the real clang, against a vmlinux.h generated once
// per run from the running kernel's BTF, and relocate them against the
// host's kernel BTF and against a variant of it ("modified") without
// task_struct::sessionid.

// removedField is the member the modified kernel lacks.
const removedStruct, removedField = "task_struct", "sessionid"

type fixture struct {
	dir       string            // vmlinux.h and the objects
	objs      map[string][]byte // object name -> ELF
	paths     map[string]string // object name -> file
	clang     string
	bpftool   string
	hostBTF   []byte
	host      *Kernel
	modBTF    []byte
	modified  *Kernel
	ambBTF    []byte
	ambiguous *Kernel

	what, why string // a missing requirement
	err       error  // a broken setup
}

var (
	fixtureOnce sync.Once
	theFixture  *fixture
	fixtureDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// setup returns the compiled objects and kernels, or skips tb (fails it
// under BPFARM_TEST_STRICT=1) if clang, bpftool or kernel BTF are missing.
func setup(tb testing.TB) *fixture {
	tb.Helper()
	fixtureOnce.Do(func() { theFixture = newFixture() })
	f := theFixture
	if f.what != "" {
		testenv.Require(tb, f.what, f.why)
	}
	if f.err != nil {
		tb.Fatal(f.err)
	}
	return f
}

func lookTool(name string) (string, error) {
	if p, err := testenv.LookBinary(name, ""); err == nil {
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

func newFixture() *fixture {
	f := &fixture{objs: make(map[string][]byte), paths: make(map[string]string)}
	var err error
	if f.clang, err = lookTool("clang-19"); err != nil {
		f.what, f.why = "clang-19", err.Error()
		return f
	}
	if f.bpftool, err = lookTool("bpftool"); err != nil {
		f.what, f.why = "bpftool", err.Error()
		return f
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		f.what, f.why = "libbpf headers", err.Error()
		return f
	}
	if f.hostBTF, err = os.ReadFile("/sys/kernel/btf/vmlinux"); err != nil {
		f.what, f.why = "kernel BTF", err.Error()
		return f
	}

	if f.dir, err = os.MkdirTemp("", "btf-core-test-"); err != nil {
		f.err = err
		return f
	}
	fixtureDir = f.dir
	header, err := run(f.bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c")
	if err != nil {
		f.err = fmt.Errorf("generate vmlinux.h: %w", err)
		return f
	}
	if err := os.WriteFile(filepath.Join(f.dir, "vmlinux.h"), header, 0o644); err != nil {
		f.err = err
		return f
	}

	sources := map[string]string{}
	examples, _ := filepath.Glob("../../examples/*/*.bpf.c")
	tests, _ := filepath.Glob("testdata/*.bpf.c")
	for _, src := range append(examples, tests...) {
		name := strings.TrimSuffix(filepath.Base(src), ".bpf.c")
		if name == "broken" {
			continue
		}
		sources[name] = src
	}
	if len(examples) == 0 || len(tests) == 0 {
		f.err = errors.New("no example or testdata sources found")
		return f
	}
	for name, src := range sources {
		out := filepath.Join(f.dir, name+".o")
		if _, err := run(f.clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
			"-I"+f.dir, "-I"+filepath.Dir(src), "-c", src, "-o", out); err != nil {
			f.err = fmt.Errorf("compile %s: %w", src, err)
			return f
		}
		if f.objs[name], err = os.ReadFile(out); err != nil {
			f.err = err
			return f
		}
		f.paths[name] = out
	}

	if f.host, err = LoadKernel("host", f.hostBTF, nil); err != nil {
		f.err = err
		return f
	}
	if f.modBTF, err = withoutMember(f.hostBTF, removedStruct, removedField); err != nil {
		f.err = err
		return f
	}
	if f.modified, err = LoadKernel("host-without-"+removedField, f.modBTF, nil); err != nil {
		f.err = err
		return f
	}
	if f.ambBTF, err = withConflictingCopy(f.hostBTF, "task_struct", "pid"); err != nil {
		f.err = err
		return f
	}
	if f.ambiguous, err = LoadKernel("host-ambiguous", f.ambBTF, nil); err != nil {
		f.err = err
		return f
	}
	return f
}

// run runs a command and returns its stdout, or an error with its stderr.
func run(name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// withoutMember rewrites raw BTF without member field of struct name: the
// BTF of a kernel built without that field.
func withoutMember(raw []byte, name, field string) ([]byte, error) {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	var types []btf.Type
	found := false
	for typ, err := range spec.All() {
		if err != nil {
			return nil, err
		}
		if s, ok := typ.(*btf.Struct); ok && s.Name == name {
			i := slices.IndexFunc(s.Members, func(m btf.Member) bool { return m.Name == field })
			if i >= 0 {
				s.Members = slices.Delete(slices.Clone(s.Members), i, i+1)
				found = true
			}
		}
		types = append(types, typ)
	}
	if !found {
		return nil, fmt.Errorf("no %s.%s in BTF", name, field)
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		return nil, err
	}
	return b.Marshal(nil, nil)
}

// withConflictingCopy rewrites raw BTF with a second struct name that
// differs from the first only in the offset of member field: relocations
// reading field are ambiguous there, and fail.
func withConflictingCopy(raw []byte, name, field string) ([]byte, error) {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	var types []btf.Type
	var dup *btf.Struct
	for typ, err := range spec.All() {
		if err != nil {
			return nil, err
		}
		if s, ok := typ.(*btf.Struct); ok && s.Name == name && dup == nil {
			cpy := *s
			cpy.Members = slices.Clone(s.Members)
			i := slices.IndexFunc(cpy.Members, func(m btf.Member) bool { return m.Name == field })
			if i < 0 {
				return nil, fmt.Errorf("no %s.%s in BTF", name, field)
			}
			cpy.Members[i].Offset += 64
			dup = &cpy
		}
		types = append(types, typ)
	}
	if dup == nil {
		return nil, fmt.Errorf("no struct %s in BTF", name)
	}
	b, err := btf.NewBuilder(append(types, dup), nil)
	if err != nil {
		return nil, err
	}
	return b.Marshal(nil, nil)
}

// object loads the compiled object name.
func (f *fixture) object(tb testing.TB, name string) *Object {
	tb.Helper()
	raw, ok := f.objs[name]
	if !ok {
		tb.Fatalf("no object %s", name)
	}
	o, err := LoadObject(raw)
	if err != nil {
		tb.Fatalf("load %s: %v", name, err)
	}
	return o
}

// names returns the names of the compiled objects, sorted.
func (f *fixture) names() []string {
	var out []string
	for n := range f.objs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// progReport returns the report of program name.
func progReport(tb testing.TB, r Report, name string) ProgramReport {
	tb.Helper()
	for _, p := range r.Programs {
		if p.Name == name {
			return p
		}
	}
	tb.Fatalf("kernel %s: no program %s in report", r.Kernel, name)
	return ProgramReport{}
}
