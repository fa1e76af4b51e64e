package compile

import (
	"strconv"
	"strings"
	"testing"
)

// refusedFlags are flags that read or write files, load code or pass
// arguments to other tools, and malformed ones.
var refusedFlags = []string{
	"-Xclang", "-I/etc", "-I", "-isystem", "-isystem/etc", "-iquote/etc", "-idirafter/etc",
	"-include", "-include/etc/passwd", "-imacros/etc/passwd",
	"-fplugin=x.so", "-fpass-plugin=x.so", "-load", "--config=x", "--config", "@file", "@/etc/passwd",
	"-o", "-o/tmp/x", "-target", "--target=x86_64", "-B", "-B/tmp", "--sysroot", "--sysroot=/",
	"-Wl,-x", "-Wa,-x", "-Wp,-MD,/tmp/x", "-mllvm", "-fembed-bitcode", "",
	"-DFOO\nBAR", "-DFOO=1\n#include </etc/passwd>", "-D", "-D1X", "-D=1", "-DA-B", "-U", "-U1", "-UA=1",
	"-W", "-W,x", "-Wfoo/bar", "-std=c++17", "-std=", "-std=gnu89x", "-O0", "-Os", "-O", "-O4", "-Ofast",
	"-MD", "-MF/tmp/x", "-save-temps", "-ftime-trace=/tmp/x", "-fprofile-instr-generate", "-resource-dir=/",
	"-x", "c", "--", "-", "/etc/passwd", "-E", "-S", "-c", "-v", "-###", "-fsyntax-only",
	"-fcrash-diagnostics-dir=/tmp", "-fmodules", "-fmodule-map-file=/x", "-nostdinc", "-gen-reproducer",
}

func TestValidateFlags(t *testing.T) {
	ok := []string{
		"-DFOO", "-DFOO=1", "-D_x9=a b \"c\"", "-DX=", "-UFOO", "-U__TARGET_ARCH_x86",
		"-Wall", "-Wextra", "-Werror", "-Werror=unused-variable", "-Wno-unused", "-W#warnings",
		"-Wframe-larger-than=512", "-Wno-error=foo_bar",
		"-std=c99", "-std=c11", "-std=c17", "-std=gnu99", "-std=gnu11", "-std=gnu17",
		"-std=c2x", "-std=gnu2x", "-std=c23", "-std=gnu23",
		"-O1", "-O2", "-O3", "-g",
	}
	if err := ValidateFlags(ok); err != nil {
		t.Errorf("allowed flags refused: %v", err)
	}
	if err := ValidateFlags(nil); err != nil {
		t.Error(err)
	}
	for _, f := range refusedFlags {
		err := ValidateFlags([]string{"-Wall", f, "-O2"})
		if err == nil {
			t.Errorf("flag %q allowed", f)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "flag "+strconv.Quote(f)+": ") || strings.ContainsAny(msg, "\n\r") {
			t.Errorf("flag %q: message %q", f, msg)
		}
	}
	err := ValidateFlags([]string{"-Xclang"})
	if want := `flag "-Xclang": not allowed: only -D, -U, -W, -std= and -O1..-O3 may be given`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	err = ValidateFlags([]string{"-Wl,-x"})
	if err == nil || !strings.Contains(err.Error(), "passes arguments to another tool") {
		t.Errorf("-Wl,-x: %v", err)
	}
}

func TestIncludesVmlinuxFirst(t *testing.T) {
	yes := []string{
		"#include \"vmlinux.h\"\n",
		"#include <vmlinux.h>",
		"\xef\xbb\xbf// SPDX\n/* multi\n line */\n\n  #  include\t\"vmlinux.h\" // types\nint x;\n",
		"/**/#include \"vmlinux.h\" /* c */ \n",
		"\r\n#include \"vmlinux.h\"\r\n",
	}
	no := []string{
		"", "int x;\n#include \"vmlinux.h\"\n",
		"#define X\n#include \"vmlinux.h\"\n",
		"#include \"bpf/bpf_helpers.h\"\n#include \"vmlinux.h\"\n",
		"// comment \\\n#include \"vmlinux.h\"\n",
		"#include \"vmlinux.h\" int x;\n",
		"#include \"vmlinux.hh\"\n",
		"#include \"sub/vmlinux.h\"\n",
		"#include VMLINUX\n",
		"/* unterminated\n#include \"vmlinux.h\"\n",
		"#inc\\\nlude \"vmlinux.h\"\n",
		"#pragma once\n#include \"vmlinux.h\"\n",
	}
	for _, s := range yes {
		if !includesVmlinuxFirst([]byte(s)) {
			t.Errorf("%q: want true", s)
		}
	}
	for _, s := range no {
		if includesVmlinuxFirst([]byte(s)) {
			t.Errorf("%q: want false", s)
		}
	}
}

func TestApplyRewrites(t *testing.T) {
	rws := []rewrite{{"/src/", ""}, {"/src", "."}, {"/farm/libbpf/", "<farm>/"}, {"/farm/", "<farm>/"}, {"/tmp/job-1/src/", ""}}
	for in, want := range map[string]string{
		"/src/a.h:1:2: error: x":                               "a.h:1:2: error: x",
		"In file included from /farm/libbpf/bpf/bpf_helpers.h": "In file included from <farm>/bpf/bpf_helpers.h",
		"'/farm/x.h' and /tmp/job-1/src/y.h":                   "'<farm>/x.h' and y.h",
		"-I /src":                                              "-I .",
		"/srcx /usr/src/a /src":                                "/srcx /usr/src/a .",
		"no paths here":                                        "no paths here",
	} {
		if got := applyRewrites(in, rws); got != want {
			t.Errorf("applyRewrites(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCleanLog(t *testing.T) {
	in := "LLVM ERROR: out of memory\nAllocation failed\nPLEASE submit a bug report to https://x and include the crash backtrace.\nStack dump:\n0.\tProgram arguments: /usr/lib/llvm-19/bin/clang -c x.c\n1.\tx.c:1:1: current parser token 'A'\nStack dump without symbol names (ensure you have llvm-symbolizer in your PATH):\n0  libLLVM.so.19.1 0x00007f05c564524a llvm::sys::PrintStackTrace + 54\n1  libLLVM.so.19.1 0x00007f05c564524a\n39 libc.so.6            0x00007f05c5645305 __libc_start_main + 133\nclang: error: clang frontend command failed with exit code 134 (use -v to see invocation)\n"
	got := cleanLog(in, 1<<20, false)
	want := "LLVM ERROR: out of memory\nAllocation failed\nclang stopped abnormally (stack dump omitted)\nclang: error: clang frontend command failed with exit code 134 (use -v to see invocation)\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	got = cleanLog(strings.Repeat("0123456789\n", 100), 55, false)
	if got != strings.Repeat("0123456789\n", 5)+"[output truncated]\n" {
		t.Errorf("capped log %q", got)
	}
}

func TestParseDiagnostics(t *testing.T) {
	log := "In file included from x.bpf.c:1:\n" +
		"inc/a.h:3:5: error: unknown type name 'foo'\n" +
		"    3 | foo bar;\n" +
		"<farm>/vmlinux.h:10:8: note: previous definition is here\n" +
		"a/../b.h:2: warning: something\n" +
		"clang: error: no such file or directory: 'y.c'\n" +
		"<command line>:1:9: warning: 'X' macro redefined\n" +
		"1 error generated.\n"
	got := parseDiagnostics(log)
	want := []string{
		"inc/a.h:3:5: error: unknown type name 'foo'",
		"<farm>/vmlinux.h:10:8: note: previous definition is here",
		"b.h:2: warning: something",
		"error: no such file or directory: 'y.c'",
		"<command line>:1:9: warning: 'X' macro redefined",
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("diagnostic %d: %q, want %q", i, got[i].String(), want[i])
		}
	}
}
