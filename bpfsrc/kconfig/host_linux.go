//go:build linux

package kconfig

import (
	"os"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

func uname() (release, version string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", err
	}
	return unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]), nil
}

// hasBPFCookie is libbpf's FEAT_BPF_COOKIE: bpf_get_attach_cookie() in a
// tracing program.
func hasBPFCookie() bool {
	return features.HaveProgramHelper(ebpf.TracePoint, asm.FnGetAttachCookie) == nil
}

// hasSyscallWrapper is FEAT_SYSCALL_WRAPPER: syscalls are entered through
// arch-prefixed wrappers (__x64_sys_bpf). libbpf tries to create a kprobe
// there; a kernel without kprobes cannot, so this reads /proc/kallsyms.
func hasSyscallWrapper() bool {
	sym := map[string]string{"amd64": " __x64_sys_bpf", "arm64": " __arm64_sys_bpf"}[runtime.GOARCH]
	if sym == "" {
		return false
	}
	data, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasSuffix(line, sym) || strings.Contains(line, sym+"\t") {
			return true
		}
	}
	return false
}
