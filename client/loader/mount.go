//go:build linux

package loader

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Where the loader mounts the file systems it needs.
const (
	bpffsDir   = "/sys/fs/bpf"
	tracefsDir = "/sys/kernel/tracing"
)

// mountInfoPath is read to find mounts; a variable for tests.
var mountInfoPath = "/proc/self/mountinfo"

// mountMu serializes mounting within the process.
var mountMu sync.Mutex

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	MountPoint string
	FSType     string
}

// parseMountInfo parses the contents of /proc/self/mountinfo.
func parseMountInfo(data []byte) ([]mountEntry, error) {
	var entries []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("mountinfo: no separator in %q", line)
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		entries = append(entries, mountEntry{MountPoint: unescapeMountPath(f[4]), FSType: g[0]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return entries, nil
}

// unescapeMountPath undoes the octal escapes (\040 for a space, ...) of
// mountinfo paths.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, ok := octal(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(s string) (byte, bool) {
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}

// mountedAt reports whether a file system of type fstype is mounted at dir
// (the last mount there wins, as it hides the earlier ones).
func mountedAt(entries []mountEntry, dir, fstype string) bool {
	dir = filepath.Clean(dir)
	found := false
	for _, e := range entries {
		if filepath.Clean(e.MountPoint) == dir {
			found = e.FSType == fstype
		}
	}
	return found
}

// ensureMount mounts a file system of type fstype at dir unless one is
// there already. It is idempotent.
func ensureMount(dir, fstype, data string) error {
	mountMu.Lock()
	defer mountMu.Unlock()

	raw, err := os.ReadFile(mountInfoPath)
	if err != nil {
		return fmt.Errorf("check mounts: %w", err)
	}
	entries, err := parseMountInfo(raw)
	if err != nil {
		return fmt.Errorf("check mounts: %w", err)
	}
	if mountedAt(entries, dir, fstype) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount %s at %s: %w", fstype, dir, err)
	}
	if err := unix.Mount(fstype, dir, fstype, 0, data); err != nil {
		return fmt.Errorf("mount %s at %s: %w", fstype, dir, err)
	}
	return nil
}

// ensureBPFFS makes sure pinDir is on a bpffs: it mounts bpffs at
// /sys/fs/bpf when missing and pinDir is below it.
func ensureBPFFS(pinDir string) error {
	pinDir = filepath.Clean(pinDir)
	if pinDir == bpffsDir || strings.HasPrefix(pinDir, bpffsDir+"/") {
		if err := ensureMount(bpffsDir, "bpf", "mode=0700"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(pinDir, &st); err != nil {
		return fmt.Errorf("pin directory %s: %w", pinDir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin directory %s is not on a bpf file system (mount -t bpf bpf DIR)", pinDir)
	}
	return nil
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing when missing.
// Tracepoints, kprobes and uprobes need it (cilium/ebpf looks for it there).
func ensureTracefs() error {
	return ensureMount(tracefsDir, "tracefs", "")
}
