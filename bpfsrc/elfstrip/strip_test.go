package elfstrip

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"github.com/bpfarm/bpfarm/internal/fuzzseed"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
)

// The tests compile the examples and the programs in testdata with the real
// clang-19, against a vmlinux.h generated once per run from the running
// kernel's BTF, and compare StripDebug with llvm-strip-19 --strip-debug.

var (
	toolsOnce  sync.Once
	toolsErr   error
	clangPath  string
	stripPath  string
	bpftool    string
	vmlinuxDir string

	objsOnce sync.Once
	objs     []testObject
	objsErr  error
)

type testObject struct {
	name string
	obj  []byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if vmlinuxDir != "" {
		os.RemoveAll(vmlinuxDir)
	}
	os.Exit(code)
}

// skip skips t, or fails it if BPFARM_TEST_STRICT=1.
func skip(t testing.TB, args ...any) {
	t.Helper()
	if os.Getenv("BPFARM_TEST_STRICT") == "1" {
		t.Fatal(args...)
	}
	t.Skip(args...)
}

func setupTools() error {
	var err error
	if clangPath, err = exec.LookPath("clang-19"); err != nil {
		return fmt.Errorf("clang-19 not found: %w", err)
	}
	if stripPath, err = exec.LookPath("llvm-strip-19"); err != nil {
		return fmt.Errorf("llvm-strip-19 not found: %w", err)
	}
	if bpftool, err = exec.LookPath("bpftool"); err != nil {
		if _, serr := os.Stat("/usr/sbin/bpftool"); serr != nil {
			return fmt.Errorf("bpftool not found: %w", err)
		}
		bpftool = "/usr/sbin/bpftool"
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		return fmt.Errorf("libbpf headers not installed: %w", err)
	}
	h, err := run(bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c")
	if err != nil {
		return fmt.Errorf("generate vmlinux.h: %w", err)
	}
	dir, err := os.MkdirTemp("", "elfstrip-vmlinux-")
	if err != nil {
		return err
	}
	vmlinuxDir = dir
	return os.WriteFile(filepath.Join(dir, "vmlinux.h"), h, 0o644)
}

func run(prog string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

func requireTools(t testing.TB) {
	t.Helper()
	toolsOnce.Do(func() { toolsErr = setupTools() })
	if toolsErr != nil {
		skip(t, toolsErr)
	}
}

// objects returns the objects of every example but broken and of every
// program in testdata, compiled once per run.
func objects(t testing.TB) []testObject {
	t.Helper()
	requireTools(t)
	objsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "elfstrip-objs-")
		if err != nil {
			objsErr = err
			return
		}
		defer os.RemoveAll(dir)
		var srcDirs []string
		for _, pattern := range []string{"../../examples/*", "testdata/*"} {
			m, err := filepath.Glob(pattern)
			if err != nil {
				objsErr = err
				return
			}
			srcDirs = append(srcDirs, m...)
		}
		for _, d := range srcDirs {
			name := filepath.Base(d)
			src := filepath.Join(d, name+".bpf.c")
			if name == "broken" {
				continue
			}
			if _, err := os.Stat(src); err != nil {
				continue
			}
			out := filepath.Join(dir, name+".o")
			if _, err := run(clangPath, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
				"-I"+vmlinuxDir, "-c", src, "-o", out); err != nil {
				objsErr = fmt.Errorf("compile %s: %w", name, err)
				return
			}
			obj, err := os.ReadFile(out)
			if err != nil {
				objsErr = err
				return
			}
			objs = append(objs, testObject{name, obj})
		}
		if len(objs) < 6 {
			objsErr = fmt.Errorf("found only %d programs to compile", len(objs))
		}
	})
	if objsErr != nil {
		t.Fatal(objsErr)
	}
	return objs
}

func object(t testing.TB, name string) []byte {
	t.Helper()
	for _, o := range objects(t) {
		if o.name == name {
			return o.obj
		}
	}
	t.Fatalf("no object %s", name)
	return nil
}

// llvmStrip returns obj stripped by llvm-strip-19 --strip-debug.
func llvmStrip(t *testing.T, obj []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.o"), filepath.Join(dir, "out.o")
	if err := os.WriteFile(in, obj, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(stripPath, "--strip-debug", "-o", out, in); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseELF(t *testing.T, what string, obj []byte) *elf.File {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return f
}

func isDebugSection(name string) bool {
	return isDebug(name) || name == ".debug"
}

// sectionData returns the content of every section with content, by name.
func sectionData(t *testing.T, f *elf.File) map[string][]byte {
	t.Helper()
	m := make(map[string][]byte)
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NULL || s.Type == elf.SHT_NOBITS {
			m[s.Name] = nil
			continue
		}
		b, err := s.Data()
		if err != nil {
			t.Fatalf("section %s: %v", s.Name, err)
		}
		m[s.Name] = b
	}
	return m
}

type symbol struct {
	Name          string
	Value, Size   uint64
	Info, Other   byte
	Section       string
	SectionIndex  elf.SectionIndex // reserved indices only
	SectionSymbol bool
}

// symbols returns f's symbol table with sections by name.
func symbols(t *testing.T, f *elf.File) []symbol {
	t.Helper()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var out []symbol
	for _, s := range syms {
		sym := symbol{Name: s.Name, Value: s.Value, Size: s.Size, Info: s.Info, Other: s.Other}
		if s.Section > 0 && s.Section < elf.SHN_LORESERVE {
			sym.Section = f.Sections[s.Section].Name
		} else {
			sym.SectionIndex = s.Section
		}
		out = append(out, sym)
	}
	return out
}

type reloc struct {
	Offset uint64
	Type   uint32
	Symbol string
	Addend int64
}

// relocations returns the relocations of every relocation section of f by
// section name, their symbols by name (section symbols by section name).
func relocations(t *testing.T, f *elf.File) map[string][]reloc {
	t.Helper()
	syms := symbols(t, f)
	m := make(map[string][]reloc)
	for _, s := range f.Sections {
		if s.Type != elf.SHT_REL && s.Type != elf.SHT_RELA {
			continue
		}
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		ent := 16
		if s.Type == elf.SHT_RELA {
			ent = 24
		}
		rs := []reloc{}
		for off := 0; off+ent <= len(b); off += ent {
			info := f.ByteOrder.Uint64(b[off+8:])
			r := reloc{Offset: f.ByteOrder.Uint64(b[off:]), Type: uint32(info)}
			if ent == 24 {
				r.Addend = int64(f.ByteOrder.Uint64(b[off+16:]))
			}
			if i := info >> 32; i > 0 {
				if int(i) > len(syms) {
					t.Fatalf("section %s: symbol %d out of range", s.Name, i)
				}
				sym := syms[i-1]
				r.Symbol = sym.Name
				if elf.ST_TYPE(sym.Info) == elf.STT_SECTION {
					r.Symbol = "section " + sym.Section
				}
			}
			rs = append(rs, r)
		}
		m[s.Name] = rs
	}
	return m
}

func TestStripDebugMatchesLLVMStrip(t *testing.T) {
	for _, o := range objects(t) {
		t.Run(o.name, func(t *testing.T) {
			orig := slices.Clone(o.obj)
			ours, err := StripDebug(o.obj)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(orig, o.obj) {
				t.Fatal("StripDebug modified its input")
			}
			theirs := llvmStrip(t, o.obj)
			t.Logf("%d bytes, ours %d, llvm-strip %d", len(o.obj), len(ours), len(theirs))

			in := parseELF(t, "input", o.obj)
			of := parseELF(t, "ours", ours)
			lf := parseELF(t, "llvm-strip", theirs)
			if of.Class != in.Class || of.Data != in.Data || of.Type != in.Type || of.Machine != in.Machine {
				t.Errorf("header changed: %v %v %v %v", of.Class, of.Data, of.Type, of.Machine)
			}

			// (1) No debug sections; there were some.
			debugIn := 0
			for _, s := range in.Sections {
				if isDebugSection(s.Name) {
					debugIn++
				}
			}
			if debugIn == 0 {
				t.Fatal("input has no debug sections")
			}
			for _, s := range of.Sections {
				if isDebugSection(s.Name) || s.Name == ".llvm_addrsig" {
					t.Errorf("output has section %s", s.Name)
				}
			}

			// (2) The same sections as llvm-strip's, with the same content.
			od, ld, id := sectionData(t, of), sectionData(t, lf), sectionData(t, in)
			var oNames, lNames []string
			for _, s := range of.Sections {
				oNames = append(oNames, s.Name)
			}
			for _, s := range lf.Sections {
				if s.Name != ".llvm_addrsig" {
					lNames = append(lNames, s.Name)
				}
			}
			slices.Sort(oNames)
			slices.Sort(lNames)
			if !slices.Equal(oNames, lNames) {
				t.Errorf("sections:\nours       %q\nllvm-strip %q", oNames, lNames)
			}
			for _, s := range of.Sections {
				switch s.Type {
				case elf.SHT_SYMTAB, elf.SHT_REL, elf.SHT_RELA, elf.SHT_STRTAB:
					// Compared below by meaning. llvm-strip rebuilds
					// the string tables; ours are the input's.
					if s.Type == elf.SHT_STRTAB && !bytes.Equal(od[s.Name], id[s.Name]) {
						t.Errorf("string table %s differs from the input's", s.Name)
					}
					continue
				}
				if !bytes.Equal(od[s.Name], ld[s.Name]) {
					t.Errorf("section %s: %d bytes, llvm-strip's %d, differ", s.Name, len(od[s.Name]), len(ld[s.Name]))
				}
				if !bytes.Equal(od[s.Name], id[s.Name]) {
					t.Errorf("section %s differs from the input's", s.Name)
				}
				is := in.Section(s.Name)
				ls := lf.Section(s.Name)
				if s.Type != is.Type || s.Flags != is.Flags || s.Addralign != is.Addralign || s.Entsize != is.Entsize || s.Size != is.Size {
					t.Errorf("section %s header: %+v, input %+v", s.Name, s.SectionHeader, is.SectionHeader)
				}
				if ls != nil && (s.Type != ls.Type || s.Flags != ls.Flags || s.Size != ls.Size) {
					t.Errorf("section %s header: %+v, llvm-strip %+v", s.Name, s.SectionHeader, ls.SectionHeader)
				}
				if s.Type != elf.SHT_NOBITS && s.Addralign > 1 && s.Offset%s.Addralign != 0 {
					t.Errorf("section %s at %#x, not aligned to %d", s.Name, s.Offset, s.Addralign)
				}
			}
			if gs, ls := symbols(t, of), symbols(t, lf); !reflect.DeepEqual(gs, ls) {
				t.Errorf("symbols:\nours       %+v\nllvm-strip %+v", gs, ls)
			}
			if symtab := of.SectionByType(elf.SHT_SYMTAB); symtab != nil {
				syms, _ := of.Symbols()
				want := 1
				for _, s := range syms {
					if elf.ST_BIND(s.Info) == elf.STB_LOCAL {
						want++
					}
				}
				if int(symtab.Info) != want {
					t.Errorf("symtab sh_info %d, want %d", symtab.Info, want)
				}
			}
			or, lr := relocations(t, of), relocations(t, lf)
			if !reflect.DeepEqual(or, lr) {
				t.Errorf("relocations:\nours       %+v\nllvm-strip %+v", or, lr)
			}
			if ir := relocations(t, in); len(or) == 0 && len(ir) > 0 {
				t.Error("no relocations left")
			}

			// Stripping again changes nothing.
			again, err := StripDebug(ours)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, ours) {
				t.Error("stripping the output again changed it")
			}
		})
	}
}

// TestStripDebugBTF checks that bpftool sees the same BTF in the output.
func TestStripDebugBTF(t *testing.T) {
	for _, o := range objects(t) {
		t.Run(o.name, func(t *testing.T) {
			ours, err := StripDebug(o.obj)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in.o"), filepath.Join(dir, "out.o")
			if err := os.WriteFile(in, o.obj, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, ours, 0o644); err != nil {
				t.Fatal(err)
			}
			want, err := run(bpftool, "btf", "dump", "file", in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := run(bpftool, "btf", "dump", "file", out)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 || !bytes.Equal(got, want) {
				t.Errorf("BTF dump differs: %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// TestStripDebugCollectionSpec checks that cilium/ebpf reads the same
// programs and maps from the output.
func TestStripDebugCollectionSpec(t *testing.T) {
	for _, o := range objects(t) {
		t.Run(o.name, func(t *testing.T) {
			ours, err := StripDebug(o.obj)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(o.obj))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(ours))
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Programs) != len(want.Programs) || len(want.Programs) == 0 {
				t.Fatalf("%d programs, want %d", len(got.Programs), len(want.Programs))
			}
			for name, wp := range want.Programs {
				gp := got.Programs[name]
				if gp == nil {
					t.Errorf("program %s missing", name)
					continue
				}
				if gp.SectionName != wp.SectionName || gp.Type != wp.Type || gp.AttachType != wp.AttachType || gp.License != wp.License {
					t.Errorf("program %s: section %s type %v attach %v license %q, want %s %v %v %q",
						name, gp.SectionName, gp.Type, gp.AttachType, gp.License, wp.SectionName, wp.Type, wp.AttachType, wp.License)
				}
				if g, w := fmt.Sprintf("%v", gp.Instructions), fmt.Sprintf("%v", wp.Instructions); g != w {
					t.Errorf("program %s instructions:\n%s\nwant\n%s", name, g, w)
				}
				for i := range min(len(gp.Instructions), len(wp.Instructions)) {
					gi, wi := gp.Instructions[i], wp.Instructions[i]
					if gi != wi && (gi.OpCode != wi.OpCode || gi.Constant != wi.Constant || gi.Offset != wi.Offset ||
						gi.Reference() != wi.Reference() || gi.Symbol() != wi.Symbol() ||
						fmt.Sprint(gi.Source()) != fmt.Sprint(wi.Source())) {
						t.Errorf("program %s instruction %d: %v, want %v", name, i, gi, wi)
						break
					}
				}
			}
			if len(got.Maps) != len(want.Maps) || len(want.Maps) == 0 {
				t.Fatalf("%d maps, want %d", len(got.Maps), len(want.Maps))
			}
			for name, wm := range want.Maps {
				gm := got.Maps[name]
				if gm == nil {
					t.Errorf("map %s missing", name)
					continue
				}
				if gm.Type != wm.Type || gm.KeySize != wm.KeySize || gm.ValueSize != wm.ValueSize ||
					gm.MaxEntries != wm.MaxEntries || gm.Flags != wm.Flags || !reflect.DeepEqual(gm.Contents, wm.Contents) ||
					fmt.Sprint(gm.Key) != fmt.Sprint(wm.Key) || fmt.Sprint(gm.Value) != fmt.Sprint(wm.Value) {
					t.Errorf("map %s: %v, want %v", name, gm, wm)
				}
			}
		})
	}
}

// TestStripDebugKernelLoads loads every program of the output into the
// kernel with bpftool, where the input loads.
func TestStripDebugKernelLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		skip(t, "loading BPF programs needs root")
	}
	for _, o := range objects(t) {
		t.Run(o.name, func(t *testing.T) {
			ours, err := StripDebug(o.obj)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in.o"), filepath.Join(dir, "out.o")
			if err := os.WriteFile(in, o.obj, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, ours, 0o644); err != nil {
				t.Fatal(err)
			}
			loadall := func(file, tag string) error {
				pin := fmt.Sprintf("/sys/fs/bpf/bpfarm-elfstrip-%d-%s-%s", os.Getpid(), o.name, tag)
				defer os.RemoveAll(pin)
				_, err := run(bpftool, "prog", "loadall", file, pin)
				return err
			}
			if err := loadall(in, "in"); err != nil {
				skip(t, "the unstripped object does not load here either: ", err)
			}
			if err := loadall(out, "out"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStripDebugNoDebugUnchanged(t *testing.T) {
	for _, o := range objects(t)[:2] {
		stripped := llvmStrip(t, o.obj)
		got, err := StripDebug(stripped)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, stripped) {
			t.Errorf("%s: object without debug sections changed", o.name)
		}
	}
}

func TestStripDebugRefuses(t *testing.T) {
	obj := object(t, "tiny")
	f := parseELF(t, "tiny", obj)
	bo := f.ByteOrder
	shoff := bo.Uint64(obj[0x28:])
	shdr := func(b []byte, name string) []byte {
		for i, s := range f.Sections {
			if s.Name == name {
				return b[shoff+uint64(i)*shdrSize:][:shdrSize]
			}
		}
		t.Fatalf("no section %s", name)
		return nil
	}
	symtab := f.SectionByType(elf.SHT_SYMTAB)

	for _, tc := range []struct {
		name   string
		mutate func(b []byte)
	}{
		{"empty", nil},
		{"not ELF", func(b []byte) { b[0] = 'X' }},
		{"ELF32", func(b []byte) { b[elf.EI_CLASS] = byte(elf.ELFCLASS32) }},
		{"ET_EXEC", func(b []byte) { bo.PutUint16(b[0x10:], uint16(elf.ET_EXEC)) }},
		{"x86-64", func(b []byte) { bo.PutUint16(b[0x12:], uint16(elf.EM_X86_64)) }},
		{"extended shnum", func(b []byte) { bo.PutUint16(b[0x3c:], 0) }},
		{"SHN_XINDEX shstrndx", func(b []byte) { bo.PutUint16(b[0x3e:], uint16(elf.SHN_XINDEX)) }},
		{"shoff out of bounds", func(b []byte) { bo.PutUint64(b[0x28:], uint64(len(b))) }},
		{"section out of bounds", func(b []byte) { bo.PutUint64(shdr(b, ".text")[0x20:], 1<<40) }},
		{"sections overlap", func(b []byte) {
			bo.PutUint64(shdr(b, "xdp")[0x18:], bo.Uint64(shdr(b, ".strtab")[0x18:]))
		}},
		{"e_version", func(b []byte) { bo.PutUint32(b[0x14:], 2) }},
		{"huge SHT_NOBITS", func(b []byte) { bo.PutUint64(shdr(b, ".bss")[0x20:], 1<<63) }},
		{"compressed section", func(b []byte) {
			bo.PutUint64(shdr(b, ".BTF")[0x08:], uint64(elf.SHF_COMPRESSED))
		}},
		{"symtab link without debug sections", func(b []byte) {
			// Rename the debug sections, so that the object is one
			// StripDebug would return as is, then break .symtab's
			// sh_link: it is checked all the same.
			for _, s := range f.Sections {
				if isDebug(s.Name) {
					nameOff := bo.Uint32(shdr(b, s.Name)[0:])
					copy(b[f.Section(".strtab").Offset+uint64(nameOff):], "X")
				}
			}
			bo.PutUint32(shdr(b, ".symtab")[0x28:], 0)
		}},
		{"symbol section out of range", func(b []byte) {
			bo.PutUint16(b[symtab.Offset+symSize+6:], uint16(len(f.Sections)))
		}},
		{"symbol SHN_XINDEX", func(b []byte) {
			bo.PutUint16(b[symtab.Offset+symSize+6:], uint16(elf.SHN_XINDEX))
		}},
		{"relocation against a dropped symbol", func(b []byte) {
			// Point the relocations of the program at the section
			// symbol of .debug_abbrev.
			syms, _ := f.Symbols()
			idx := -1
			for i, s := range syms {
				if elf.ST_TYPE(s.Info) == elf.STT_SECTION && f.Sections[s.Section].Name == ".debug_abbrev" {
					idx = i + 1
				}
			}
			rel := f.Section(".relxdp")
			if idx < 0 || rel == nil {
				t.Fatalf("test object: no .debug_abbrev symbol (%d) or .relxdp", idx)
			}
			info := b[rel.Offset+8:]
			bo.PutUint64(info, uint64(idx)<<32|bo.Uint64(info)&0xffffffff)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := slices.Clone(obj)
			if tc.mutate == nil {
				b = nil
			} else {
				tc.mutate(b)
			}
			_, err := StripDebug(b)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want ErrMalformed", err)
			}
			t.Log(err)
		})
	}
}

// TestWriteFuzzSeeds writes FuzzStripDebug's seed corpus (testdata/fuzz)
// from the compiled examples and test objects (only with
// BPFARM_WRITE_FUZZ_SEEDS=1): compiling them in every fuzz worker would
// take most of a bounded fuzzing run. The large objects are seeded
// stripped: the fuzzer would spend its time minimizing inputs of hundreds
// of KiB instead of mutating them.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BPFARM_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set BPFARM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz from real objects")
	}
	for _, o := range objects(t) {
		obj := o.obj
		if len(obj) > 64<<10 {
			s, err := StripDebug(obj)
			if err != nil {
				t.Fatal(err)
			}
			obj = s
		}
		if err := fuzzseed.Write("FuzzStripDebug", o.name, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzStripDebug checks that StripDebug never panics and that whatever it
// accepts comes out as ELF that debug/elf reads, without debug sections.
// Its seeds are real objects (TestWriteFuzzSeeds).
func FuzzStripDebug(f *testing.F) {
	f.Fuzz(func(t *testing.T, obj []byte) {
		out, err := StripDebug(obj)
		if err != nil {
			return
		}
		ef, err := elf.NewFile(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		for _, s := range ef.Sections {
			if s.Type == elf.SHT_NOBITS {
				continue
			}
			if _, err := s.Data(); err != nil {
				t.Fatalf("section %s: %v", s.Name, err)
			}
		}
		if ef.SectionByType(elf.SHT_SYMTAB) != nil {
			if _, err := ef.Symbols(); err != nil {
				t.Fatalf("symbols: %v", err)
			}
		}
		again, err := StripDebug(out)
		if err != nil {
			t.Fatalf("output refused: %v", err)
		}
		for _, s := range ef.Sections {
			if isDebug(s.Name) {
				t.Fatalf("output has section %s", s.Name)
			}
		}
		if !bytes.Equal(again, out) {
			t.Fatal("stripping the output again changed it")
		}
	})
}

func BenchmarkStripDebug(b *testing.B) {
	obj := object(b, "execsnoop")
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := StripDebug(obj); err != nil {
			b.Fatal(err)
		}
	}
}
