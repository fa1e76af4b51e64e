package compile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// secret is a host file's content that must never reach a result.
type secret struct {
	path   string
	marker string // a piece of the content
}

// hostSecrets returns /etc/passwd and a canary file in a host directory next
// to the compiler's job directories.
func hostSecrets(t *testing.T, c *Compiler) []secret {
	t.Helper()
	canary := filepath.Join(c.cfg.WorkDir, "canary.h")
	marker := fmt.Sprintf("CANARY_%d_%d", os.Getpid(), time.Now().UnixNano())
	if err := os.WriteFile(canary, []byte("int "+marker+" = 1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secrets := []secret{{canary, marker}}
	if data, err := os.ReadFile("/etc/passwd"); err == nil && bytes.HasPrefix(data, []byte("root:x:0:0")) {
		secrets = append(secrets, secret{"/etc/passwd", "root:x:0:0"})
	}
	return secrets
}

// checkNoSecrets fails if any secret appears anywhere in what a compile
// returned.
func checkNoSecrets(t *testing.T, secrets []secret, res *Result, err error) {
	t.Helper()
	var parts [][]byte
	if res != nil {
		parts = append(parts, res.Object, []byte(res.Log), []byte(strings.Join(res.Command, " ")))
		for _, d := range res.Diagnostics {
			parts = append(parts, []byte(d.String()))
		}
	}
	if err != nil {
		parts = append(parts, []byte(err.Error()))
		var ce *Error
		if errors.As(err, &ce) {
			parts = append(parts, []byte(ce.Log))
			for _, d := range ce.Diagnostics {
				parts = append(parts, []byte(d.String()))
			}
		}
	}
	for _, s := range secrets {
		for _, p := range parts {
			if bytes.Contains(p, []byte(s.marker)) {
				t.Errorf("content of %s leaked: %q", s.path, p)
			}
		}
	}
}

func TestHostFilesInvisible(t *testing.T) {
	c := newCompiler(t, func(cfg *Config) { cfg.UsePCH = true })
	secrets := hostSecrets(t, c)
	canary := secrets[0].path
	jobs := c.cfg.WorkDir

	cases := map[string]string{
		"include /etc/passwd":      `#include "/etc/passwd"`,
		"include </etc/shadow>":    `#include </etc/shadow>`,
		"embed /etc/passwd":        "const char x[] = {\n#embed \"/etc/passwd\"\n};",
		"embed </etc/passwd>":      "const char x[] = {\n#embed </etc/passwd>\n};",
		"include environ":          `#include "/proc/self/environ"`,
		"include mountinfo":        `#include "/proc/self/mountinfo"`,
		"include relative escape":  `#include "../../../../etc/passwd"`,
		"include deep escape":      `#include "../../../../../../../../../../../../etc/passwd"`,
		"include host canary":      `#include "` + canary + `"`,
		"embed host canary":        "const char x[] = {\n#embed \"" + canary + "\"\n};",
		"include host job canary":  `#include "` + filepath.Join(jobs, "..", filepath.Base(jobs), "canary.h") + `"`,
		"include kernel BTF":       "const char x[] = {\n#embed \"/sys/kernel/btf/vmlinux\"\n};",
		"include bwrap binary":     "const char x[] = {\n#embed \"/usr/bin/bwrap\"\n};",
		"include root home":        `#include "/root/.bashrc"`,
		"include farm via escape":  `#include "../farm/../etc/passwd"`,
		"include the farm headers": `#include "` + c.cfg.Headers.Dir() + `/libbpf/bpf/bpf_helpers.h"`,
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := c.Compile(context.Background(), Request{Bundle: bundle(t, "x.bpf.c", src+"\nint y;\n"), Arch: ArchX86_64})
			checkNoSecrets(t, secrets, res, err)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a compile error", err)
			}
			if !strings.Contains(ce.Reason, "file not found") && !strings.Contains(ce.Reason, "not found") {
				t.Errorf("reason %q", ce.Reason)
			}
			if name != "include farm via escape" { // quotes the user's own "../farm/..."
				checkErrorPaths(t, c, ce)
			}
		})
	}
}

// TestEmbedBundleFile is the positive control of the #embed cases: clang
// 19 does embed files of the bundle.
func TestEmbedBundleFile(t *testing.T) {
	c := newCompiler(t, nil)
	src := "const char x[] __attribute__((used)) = {\n#embed \"data.bin\"\n};\n"
	res := compileOK(t, c, Request{Bundle: bundle(t, "x.bpf.c", src, "data.bin", "HELLO_EMBED")})
	if !bytes.Contains(res.Object, []byte("HELLO_EMBED")) {
		t.Error("embedded bytes not in the object")
	}
}

// TestSandboxView checks from inside clang that the host is out of sight:
// __has_include probes paths without failing the compile.
func TestSandboxView(t *testing.T) {
	c := newCompiler(t, nil)
	secrets := hostSecrets(t, c)
	hidden := []string{
		"/etc/passwd", "/etc/hostname", "/etc/resolv.conf", "/etc/ld.so.cache",
		"/proc/self/status", "/proc/net/dev", "/sys/class/net/lo/operstate", "/sys/kernel/btf/vmlinux",
		"/root", "/home", "/usr/include/stdio.h", "/usr/include/linux/bpf.h", "/usr/bin/bwrap", "/usr/bin/prlimit",
		"/run", "/var/log", "/dev/sda", "/dev/kmsg", "/dev/mem",
		secrets[0].path, c.cfg.WorkDir, c.cfg.Headers.Dir() + "/libbpf/bpf/bpf_helpers.h", os.TempDir(),
	}
	wd, _ := os.Getwd()
	hidden = append(hidden, wd+"/testdata/prog.bpf.c")
	visible := []string{
		"/src/x.bpf.c", "/farm/vmlinux/vmlinux.h", "/farm/libbpf/bpf/bpf_helpers.h", "/farm/uapi/linux/bpf.h",
		"/dev/null",
	}
	var src strings.Builder
	for _, p := range hidden {
		fmt.Fprintf(&src, "#if __has_include(\"%s\")\n#error visible: %s\n#endif\n", p, p)
	}
	for _, p := range visible {
		fmt.Fprintf(&src, "#if !__has_include(\"%s\")\n#error hidden: %s\n#endif\n", p, p)
	}
	src.WriteString("int x;\n")
	res := compileOK(t, c, Request{Bundle: bundle(t, "x.bpf.c", src.String())})
	checkNoSecrets(t, secrets, res, nil)

	// No network: the sandbox gets its own network namespace.
	args := c.bwrapArgs(&runSpec{chdir: "/"})
	if !slices.Contains(args, "--unshare-all") || slices.Contains(args, "--share-net") {
		t.Errorf("sandbox shares the network: %q", args)
	}
	for _, a := range args {
		if a == "--proc" || a == "/proc" || a == "/etc" || a == "/sys" {
			t.Errorf("sandbox mounts %s", a)
		}
	}
}

// TestSandboxReadOnly checks that the sources and the farm cannot be
// changed from inside: clang can write only its object.
func TestSandboxReadOnly(t *testing.T) {
	c := newCompiler(t, nil)
	for _, out := range []string{"/src/x.bpf.c", "/farm/vmlinux/vmlinux.h", "/usr/lib/evil.o", "/evil.o"} {
		spec := &runSpec{
			binds: []bind{{host: t.TempDir(), sandbox: sbSrc}},
			chdir: sbSrc, args: []string{"-target", "bpf", "-c", "-x", "c", "/dev/null", "-o", out},
		}
		res, err := c.run(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		if res.code == 0 {
			t.Errorf("clang could write %s", out)
		}
	}
}

func TestLimits(t *testing.T) {
	c := newCompiler(t, func(cfg *Config) {
		cfg.Timeout = 5 * time.Second
		cfg.CPUSeconds = 3
	})

	var bomb strings.Builder
	bomb.WriteString("#define A0 x x\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&bomb, "#define A%d A%d A%d\n", i, i-1, i-1)
	}
	bomb.WriteString("int y = A40;\n")

	var cpuBomb strings.Builder
	cpuBomb.WriteString("#define B0 1+1\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&cpuBomb, "#define B%d B%d+B%d\n", i, i-1, i-1)
	}
	cpuBomb.WriteString("#if B40\n#endif\nint y;\n")

	cases := []struct {
		name string
		b    []string
		want string // in the reason
	}{
		{"macro bomb", []string{"x.bpf.c", bomb.String()}, "limit"},
		{"macro bomb in #if", []string{"x.bpf.c", cpuBomb.String()}, "limit"},
		// clang's own include depth limit stops these at once.
		{"include recursion", []string{"x.bpf.c", "#include __FILE__\n#include __FILE__\nint y;\n"}, "#include nested too deeply"},
		{"mutual include recursion", []string{"x.bpf.c", "#include \"a.h\"\n", "a.h", "#include \"b.h\"\n#include \"b.h\"\n", "b.h", "#include \"a.h\"\n#include \"a.h\"\n"}, "#include nested too deeply"},
		{"huge object", []string{"x.bpf.c", "char big[512 << 20] = {1};\n"}, "output exceeds 64 MiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			e := compileErr(t, c, Request{Bundle: bundle(t, tc.b...)})
			if !strings.Contains(e.Reason, tc.want) || strings.Contains(e.Error(), "\n") {
				t.Errorf("reason %q, want %q", e.Reason, tc.want)
			}
			checkErrorPaths(t, c, e)
			if len(e.Log) > c.cfg.MaxLog+100 {
				t.Errorf("log of %d bytes", len(e.Log))
			}
			t.Logf("%v after %v", e, time.Since(start).Round(time.Millisecond))
		})
	}

	// The simple self-inclusion hits clang's own depth limit.
	e := compileErr(t, c, Request{Bundle: bundle(t, "x.bpf.c", "#include __FILE__\n")})
	if !strings.Contains(e.Reason, "#include nested too deeply") {
		t.Errorf("reason %q", e.Reason)
	}

	// The wall-clock limit, with CPU time to spare.
	c2 := newCompiler(t, func(cfg *Config) {
		cfg.Timeout = 2 * time.Second
		cfg.CPUSeconds = 100
	})
	start := time.Now()
	e = compileErr(t, c2, Request{Bundle: bundle(t, "x.bpf.c", cpuBomb.String())})
	if e.Reason != "exceeded the 2s time limit" {
		t.Errorf("reason %q", e.Reason)
	}
	t.Logf("%v after %v", e, time.Since(start).Round(time.Millisecond))

	// A small address space.
	c3 := newCompiler(t, func(cfg *Config) { cfg.AddressSpace = 256 << 20 })
	e = compileErr(t, c3, Request{Bundle: typicalProgram(t)})
	if e.Reason != "out of memory: exceeded the address-space limit (256 MiB)" {
		t.Errorf("reason %q\n%s", e.Reason, e.Log)
	}
	checkErrorPaths(t, c3, e)
}

func TestCallerCancel(t *testing.T) {
	c := newCompiler(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var src strings.Builder
	src.WriteString("#define B0 1+1\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&src, "#define B%d B%d+B%d\n", i, i-1, i-1)
	}
	src.WriteString("#if B40\n#endif\n")
	_, err := c.Compile(ctx, Request{Bundle: bundle(t, "x.bpf.c", src.String()), Arch: ArchX86_64})
	var ce *Error
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ce) {
		t.Errorf("got %v, want the caller's deadline", err)
	}
}
