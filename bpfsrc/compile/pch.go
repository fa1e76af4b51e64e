package compile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

// pchCall is one build of a precompiled header, shared by the compiles that
// wait for it. A failed build is remembered for pchRetryAfter, so that it
// is not retried by every compile, then forgotten: a failure (a full disk,
// say) may pass.
type pchCall struct {
	done     chan struct{}
	path     string
	err      error
	finished time.Time
}

// pchRetryAfter is how long after a failed build of a precompiled header
// compiles go without it before one tries to build it again.
const pchRetryAfter = time.Minute

// ensurePCH returns the host path of the precompiled vmlinux.h for arch,
// building it first if it does not exist yet. hv names the host paths. On
// error it returns "": the compile goes on without the header.
//
// The header is built in the same sandbox layout as the compiles, so that
// the path of vmlinux.h it records (/farm/vmlinux/vmlinux.h) is the one
// the compiles see, and stored next to vmlinux.h under a name derived from
// everything that must match for clang to accept it.
func (c *Compiler) ensurePCH(ctx context.Context, arch, vmlinux, vdigest string, hv view) (string, error) {
	v := sandboxView
	mode := "sandbox"
	if c.cfg.NoSandbox {
		v, mode = hv, "bare"
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\x00%s\x00%s\x00%s\x00%s", c.version, arch, vdigest, mode, strings.Join(c.fixedFlags(arch, v), "\x00"))
	key := hex.EncodeToString(sum.Sum(nil))[:16]
	dir := filepath.Dir(vmlinux)
	path := filepath.Join(dir, "vmlinux.h."+key+".pch")

	if _, err := os.Stat(path); err == nil {
		return path, nil
	}

	c.pchMu.Lock()
	call, ok := c.pchCalls[path]
	if ok && call.err != nil && time.Since(call.finished) >= c.pchRetry {
		// The last build failed a while ago: try again.
		ok = false
	}
	if !ok {
		call = &pchCall{done: make(chan struct{}), path: path}
		c.pchCalls[path] = call
		go func() {
			// Shared by every waiting compile: not bound to one
			// caller's context.
			err := c.buildPCH(context.WithoutCancel(ctx), arch, vmlinux, path, hv)
			c.pchMu.Lock()
			call.err, call.finished = err, time.Now()
			if err == nil {
				delete(c.pchCalls, path) // the file is there now
			}
			c.pchMu.Unlock()
			close(call.done)
		}()
	}
	c.pchMu.Unlock()

	select {
	case <-call.done:
		if call.err != nil {
			return "", call.err
		}
		return call.path, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// The precompiled header holds vmlinux.h alone, which includes no libbpf
// header: it does not depend on the libbpf header set a compile binds at
// the same sandbox path (in bare mode the set's host path is in the fixed
// flags, so in the key, anyway).

// buildPCH builds the precompiled header at path, unless another process
// did meanwhile.
func (c *Compiler) buildPCH(ctx context.Context, arch, vmlinux, path string, hv view) error {
	dir := filepath.Dir(path)
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("precompiled header: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("precompiled header: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return nil
	}

	tmp, err := os.MkdirTemp(dir, ".pch-build-")
	if err != nil {
		return fmt.Errorf("precompiled header: %w", err)
	}
	defer os.RemoveAll(tmp)

	v := sandboxView
	if c.cfg.NoSandbox {
		v = hv
		v.out = tmp
	}
	args := append(c.fixedFlags(arch, v), "-x", "c-header", filepath.Join(v.vmlinux, "vmlinux.h"), "-o", filepath.Join(v.out, pchName))
	spec := &runSpec{
		binds: []bind{
			{host: hv.libbpf, sandbox: sbLibbpf},
			{host: hv.uapi, sandbox: sbUapi},
			{host: vmlinux, sandbox: sbVmlinux + "/vmlinux.h"},
			{host: tmp, sandbox: sbOut, rw: true},
		},
		dirs:    []string{sbSrc},
		chdir:   sbSrc,
		hostDir: tmp,
		args:    args,
		fsize:   max(c.cfg.MaxOutput, 512<<20),
		noASLR:  true,
	}
	res, err := c.run(ctx, spec)
	if err != nil {
		return fmt.Errorf("precompiled header: %w", err)
	}
	if res.code != 0 || res.sig != 0 || res.timedOut {
		return fmt.Errorf("precompiled header: clang failed: %s", firstLine(applyRewrites(string(res.out), c.logRewrite)))
	}
	built := filepath.Join(tmp, pchName)
	if _, err := os.Stat(built); err != nil {
		return errors.New("precompiled header: clang wrote nothing")
	}
	if err := os.Rename(built, path); err != nil {
		return fmt.Errorf("precompiled header: %w", err)
	}
	return nil
}

// pchSafe reports whether the bundle's entry may be compiled with the
// precompiled vmlinux.h: its first directive includes vmlinux.h, and that
// include finds the farm's vmlinux.h, not one of the bundle's.
func pchSafe(b *bpfsrc.Bundle) bool {
	var entry []byte
	shadow := map[string]bool{"vmlinux.h": true, path.Join(path.Dir(b.Entry), "vmlinux.h"): true}
	for _, f := range b.Files {
		if shadow[f.Name] {
			return false
		}
		if f.Name == b.Entry {
			entry = f.Data
		}
	}
	return includesVmlinuxFirst(entry)
}

// includesVmlinuxFirst reports whether the first thing in src, after blank
// space and comments, is #include "vmlinux.h" or #include <vmlinux.h>, with
// nothing but blank space or comments after it on its line.
func includesVmlinuxFirst(src []byte) bool {
	i := 0
	if bytes.HasPrefix(src, []byte("\xef\xbb\xbf")) {
		i = 3
	}
	// Blank space and comments.
	for i < len(src) {
		switch {
		case isBlank(src[i]) || src[i] == '\n':
			i++
		case bytes.HasPrefix(src[i:], []byte("//")):
			end := bytes.IndexByte(src[i:], '\n')
			if end < 0 {
				return false
			}
			if line := bytes.TrimRight(src[i:i+end], "\r"); bytes.HasSuffix(line, []byte(`\`)) {
				return false // the comment goes on on the next line
			}
			i += end + 1
		case bytes.HasPrefix(src[i:], []byte("/*")):
			end := bytes.Index(src[i+2:], []byte("*/"))
			if end < 0 {
				return false
			}
			i += 2 + end + 2
		default:
			goto directive
		}
	}
	return false

directive:
	if src[i] != '#' {
		return false
	}
	i++
	for i < len(src) && isBlank(src[i]) {
		i++
	}
	if !bytes.HasPrefix(src[i:], []byte("include")) {
		return false
	}
	i += len("include")
	for i < len(src) && isBlank(src[i]) {
		i++
	}
	if !bytes.HasPrefix(src[i:], []byte(`"vmlinux.h"`)) && !bytes.HasPrefix(src[i:], []byte(`<vmlinux.h>`)) {
		return false
	}
	i += len(`"vmlinux.h"`)
	for i < len(src) {
		switch {
		case src[i] == '\n':
			return true
		case isBlank(src[i]):
			i++
		case bytes.HasPrefix(src[i:], []byte("//")):
			return true
		case bytes.HasPrefix(src[i:], []byte("/*")):
			end := bytes.Index(src[i+2:], []byte("*/"))
			if end < 0 {
				return false
			}
			i += 2 + end + 2
		default:
			return false
		}
	}
	return true
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v' }
