package compile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/elfstrip"
)

// Defaults for Config.
const (
	DefaultTimeout      = 60 * time.Second
	DefaultAddressSpace = 1 << 30
	DefaultMaxOutput    = 64 << 20
	DefaultMaxLog       = 1 << 20
)

// Paths inside the sandbox.
const (
	sbSrc     = "/src"
	sbOut     = "/out"
	sbVmlinux = "/farm/vmlinux"
	sbLibbpf  = "/farm/libbpf"
	sbUapi    = "/farm/uapi"
	sbPCH     = "/farm/pch/vmlinux.h.pch"
	objName   = "prog.o"
	pchName   = "vmlinux.h.pch"
)

// fingerprintVersion changes whenever the way a Compiler turns a bundle into
// an object changes in a way the other inputs of Fingerprint do not show.
const fingerprintVersion = "bpfarm-compile/2"

// Config configures a Compiler. Only Headers is required.
type Config struct {
	// Clang is the clang binary; default clang-19, then clang, from PATH.
	Clang string
	// Bwrap is the bubblewrap binary; default bwrap from PATH.
	Bwrap string
	// Prlimit is util-linux's prlimit, which applies the resource limits;
	// default prlimit from PATH.
	Prlimit string
	// Headers is the farm include tree, see PrepareHeaders.
	Headers *Headers
	// Vmlinux provides vmlinux.h; default a HostVmlinux caching under
	// WorkDir/vmlinux.
	Vmlinux VmlinuxProvider
	// WorkDir holds the job directories, removed after each compile;
	// default $TMPDIR/bpfarm-compile.
	WorkDir string
	// Timeout bounds the wall-clock time of a run of clang; default 60s.
	// A compile runs clang once, or twice if clang refuses the
	// precompiled header.
	Timeout time.Duration
	// CPUSeconds bounds the CPU time of a run of clang (RLIMIT_CPU: clang
	// is killed at most a second later); default Timeout rounded up to
	// seconds.
	CPUSeconds int
	// AddressSpace bounds clang's address space (RLIMIT_AS), in bytes;
	// default 1 GiB. A typical CO-RE program needs about 300 MiB, with or
	// without the precompiled header, of which clang's shared libraries
	// map some 220 MiB: 256 MiB is not enough.
	AddressSpace int64
	// MaxOutput bounds the size of any file clang writes, the object in
	// particular (RLIMIT_FSIZE), in bytes; default 64 MiB.
	MaxOutput int64
	// MaxOutputName names the MaxOutput limit in refusals (e.g. the
	// server's "--max-object-size"); empty names none.
	MaxOutputName string
	// MaxLog bounds the compiler output kept in Result.Log and
	// Error.Log, in bytes; default 1 MiB.
	MaxLog int
	// NoSandbox runs clang directly on the host, without bubblewrap and
	// without resource limits other than Timeout. It is for benchmarks and
	// tests that compare with bare clang; never use it for untrusted
	// source.
	NoSandbox bool
	// UsePCH compiles with a precompiled vmlinux.h when that is safe: the
	// entry file's first directive includes vmlinux.h, the bundle has no
	// vmlinux.h of its own that the include could find, and the user's
	// flags set no macros and no -std=. The header is built once per
	// vmlinux.h, clang version and fixed flags and stored next to
	// vmlinux.h; if building it fails, the Compiler compiles without it
	// until it is restarted.
	UsePCH bool
	// KeepDWARF keeps the DWARF debug sections in objects; by default they
	// are stripped (in process, like llvm-strip --strip-debug; see
	// package elfstrip), keeping .BTF and .BTF.ext.
	KeepDWARF bool
}

// Request is one compile.
type Request struct {
	// Bundle holds the sources; its Entry is compiled.
	Bundle *bpfsrc.Bundle
	// Arch is the target architecture: "x86_64" or "arm64".
	Arch string
	// Flags are the user's compiler flags, see ValidateFlags.
	Flags []string
	// Kernel, when set, compiles against one kernel's own headers instead
	// of the provider's reference vmlinux.h (per-kernel mode, for sources
	// that are not CO-RE).
	Kernel *Target
	// Libbpf is the libbpf header set to compile with (see
	// Headers.InstallSet); nil is the built-in one.
	Libbpf *LibbpfSet
}

// Target is one kernel's headers for a per-kernel compile: Dir holds its
// vmlinux.h and a linux/version.h with its LINUX_VERSION_CODE, which is
// found before the UAPI headers' own. Digest covers both files.
type Target struct {
	Dir, Digest string
}

// Result is a successful compile.
type Result struct {
	// Object is the BPF ELF object.
	Object []byte
	// Diagnostics are clang's warnings and notes.
	Diagnostics []bpfsrc.Diagnostic
	// Log is clang's output, with every sandbox and host path rewritten
	// to a bundle-relative or "<farm>/" path.
	Log string
	// Command is the clang command line as the user should see it.
	Command []string
	// Duration is the wall-clock time of the compile.
	Duration time.Duration
	// UsedPCH tells whether the precompiled vmlinux.h was used.
	UsedPCH bool
}

// Compiler compiles BPF C bundles with clang in a sandbox. It is safe for
// concurrent use.
type Compiler struct {
	cfg         Config
	clang       string // real path of the clang binary
	bwrap       string
	prlimit     string
	setarch     string // util-linux setarch, to turn ASLR off; "" if missing
	resourceDir string
	version     string
	tools       *toolFiles
	logRewrite  []rewrite // sandbox paths → user paths, for every compile

	pchMu    sync.Mutex
	pchCalls map[string]*pchCall
	pchRetry time.Duration // pchRetryAfter; tests shorten it
}

// New returns a Compiler for cfg. It finds the tools, works out which files
// clang needs in the sandbox and checks that clang runs there.
func New(cfg Config) (*Compiler, error) {
	if cfg.Headers == nil {
		return nil, errors.New("compile: Config.Headers is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.CPUSeconds <= 0 {
		cfg.CPUSeconds = int((cfg.Timeout + time.Second - 1) / time.Second)
	}
	if cfg.AddressSpace <= 0 {
		cfg.AddressSpace = DefaultAddressSpace
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = DefaultMaxOutput
	}
	if cfg.MaxLog <= 0 {
		cfg.MaxLog = DefaultMaxLog
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = filepath.Join(os.TempDir(), "bpfarm-compile")
	}
	workDir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("compile: work directory: %w", err)
	}
	cfg.WorkDir = workDir
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("compile: work directory: %w", err)
	}
	if cfg.Vmlinux == nil {
		cfg.Vmlinux = &HostVmlinux{CacheDir: filepath.Join(cfg.WorkDir, "vmlinux")}
	}

	c := &Compiler{cfg: cfg, pchCalls: make(map[string]*pchCall), pchRetry: pchRetryAfter}

	clang := cfg.Clang
	if clang == "" {
		if clang, err = findTool("clang-19"); err != nil {
			if clang, err = findTool("clang"); err != nil {
				return nil, fmt.Errorf("compile: clang-19 or clang not found in PATH")
			}
		}
	} else if clang, err = exec.LookPath(clang); err != nil {
		return nil, fmt.Errorf("compile: clang: %w", err)
	}
	if c.clang, err = filepath.EvalSymlinks(clang); err != nil {
		return nil, fmt.Errorf("compile: clang: %w", err)
	}
	if c.clang, err = filepath.Abs(c.clang); err != nil {
		return nil, fmt.Errorf("compile: clang: %w", err)
	}

	out, err := exec.Command(c.clang, "-print-resource-dir").Output()
	if err != nil {
		return nil, fmt.Errorf("compile: %s -print-resource-dir: %w", c.clang, err)
	}
	c.resourceDir = strings.TrimSpace(string(out))
	if !filepath.IsAbs(c.resourceDir) {
		return nil, fmt.Errorf("compile: clang resource directory %q is not absolute", c.resourceDir)
	}

	c.setarch, _ = findTool("setarch", "/usr/bin/setarch")
	if !cfg.NoSandbox {
		if c.bwrap, err = toolPath(cfg.Bwrap, "bwrap"); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
		if c.prlimit, err = toolPath(cfg.Prlimit, "prlimit", "/usr/bin/prlimit"); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
		if c.tools, err = clangFiles(c.clang, c.resourceDir); err != nil {
			return nil, fmt.Errorf("compile: files clang needs: %w", err)
		}
	}
	c.logRewrite = c.baseRewrites()

	// Check that clang runs (in the sandbox) and learn its version.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	res, err := c.run(ctx, &runSpec{args: []string{"--version"}, dirs: []string{sbSrc}, chdir: sbSrc, hostDir: cfg.WorkDir})
	if err != nil {
		return nil, fmt.Errorf("compile: run clang --version: %w", err)
	}
	if res.code != 0 || res.sig != 0 {
		return nil, fmt.Errorf("compile: clang does not run in the sandbox: %s", firstLine(string(res.out)))
	}
	c.version = firstLine(string(res.out))
	return c, nil
}

func toolPath(configured, name string, fallbacks ...string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return filepath.Abs(p)
	}
	p, err := findTool(name, fallbacks...)
	if err != nil {
		return "", err
	}
	return filepath.Abs(p)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// Headers returns the farm include tree the Compiler uses.
func (c *Compiler) Headers() *Headers { return c.cfg.Headers }

// Version returns the first line of clang --version.
func (c *Compiler) Version() string { return c.version }

// Fingerprint returns a digest of everything besides the request that
// determines the object a compile for arch produces: the compiler version,
// its fixed flags, the farm headers and vmlinux.h. It belongs in the key of
// a build cache.
func (c *Compiler) Fingerprint(ctx context.Context, arch string) (string, error) {
	return c.FingerprintWith(ctx, arch, nil)
}

// FingerprintWith is Fingerprint for compiles with the libbpf header set
// set (nil: the built-in one).
func (c *Compiler) FingerprintWith(ctx context.Context, arch string, set *LibbpfSet) (string, error) {
	if err := checkArch(arch); err != nil {
		return "", err
	}
	hd, err := c.cfg.Headers.DigestWith(arch, set)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	_, vd, err := c.cfg.Vmlinux.VmlinuxH(ctx, arch)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\x00%s\x00%s\x00headers %s\x00vmlinux %s\x00keep-dwarf %v\x00",
		fingerprintVersion, c.version, strings.Join(c.fixedFlags(arch, sandboxView), " "), hd, vd, c.cfg.KeepDWARF)
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// view names the directories as clang sees them: sandbox paths, or host
// paths without the sandbox.
type view struct {
	src, out, vmlinux, libbpf, uapi, pch string
}

var sandboxView = view{src: sbSrc, out: sbOut, vmlinux: sbVmlinux, libbpf: sbLibbpf, uapi: sbUapi, pch: sbPCH}

// targetMacro is the arch part of the __TARGET_ARCH_ macro libbpf's
// bpf_tracing.h expects.
func targetMacro(arch string) string {
	if arch == ArchX86_64 {
		return "x86"
	}
	return arch
}

// fixedFlags are the flags of every compile, before the user's.
func (c *Compiler) fixedFlags(arch string, v view) []string {
	return []string{
		"-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_" + targetMacro(arch),
		"-nostdinc", "-isystem", filepath.Join(c.resourceDir, "include"),
		"-idirafter", v.vmlinux, "-idirafter", v.libbpf, "-idirafter", v.uapi,
		"-fno-color-diagnostics", "-ferror-limit=50", "-fno-crash-diagnostics",
	}
}

// Compile compiles req.Bundle's entry file for req.Arch.
//
// A failure caused by the request (compile errors, a resource limit,
// refused flags, an unsupported architecture) is an *Error; any other
// error is a failure of the farm, an *InfraError.
func (c *Compiler) Compile(ctx context.Context, req Request) (*Result, error) {
	res, err := c.compile(ctx, req)
	var ce *Error
	if err != nil && !errors.As(err, &ce) {
		return nil, &InfraError{Err: err}
	}
	return res, err
}

func (c *Compiler) compile(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	if req.Bundle == nil {
		return nil, errors.New("compile: no bundle")
	}
	if err := checkArch(req.Arch); err != nil {
		return nil, &Error{Reason: err.Error()}
	}
	if err := ValidateFlags(req.Flags); err != nil {
		return nil, &Error{Reason: err.Error()}
	}
	entry := req.Bundle.Entry
	if !filepath.IsLocal(entry) || strings.HasPrefix(entry, "-") {
		return nil, fmt.Errorf("compile: invalid entry %q", entry)
	}
	uapi, err := c.cfg.Headers.uapiDir(req.Arch)
	if err != nil {
		return nil, &Error{Reason: err.Error()}
	}
	var vmlinux, vdigest string
	if req.Kernel != nil {
		vmlinux, vdigest = filepath.Join(req.Kernel.Dir, "vmlinux.h"), req.Kernel.Digest
	} else {
		vmlinux, vdigest, err = c.cfg.Vmlinux.VmlinuxH(ctx, req.Arch)
		if errors.Is(err, ErrUnsupportedArch) {
			return nil, &Error{Reason: err.Error()}
		} else if err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
	}
	if filepath.Base(vmlinux) != "vmlinux.h" {
		return nil, fmt.Errorf("compile: vmlinux provider returned %s, not a file named vmlinux.h", vmlinux)
	}

	job, err := os.MkdirTemp(c.cfg.WorkDir, "job-")
	if err != nil {
		return nil, fmt.Errorf("compile: job directory: %w", err)
	}
	defer os.RemoveAll(job)
	src, out := filepath.Join(job, "src"), filepath.Join(job, "out")
	for _, d := range []string{src, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("compile: job directory: %w", err)
		}
	}
	if err := req.Bundle.Extract(src); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}

	hostView := view{src: src, out: out, vmlinux: filepath.Dir(vmlinux), libbpf: c.cfg.Headers.libbpfDir(), uapi: uapi}
	if req.Libbpf != nil {
		// Bound where the built-in headers are: the sandbox paths, the
		// flags and so the precompiled vmlinux.h (which includes no
		// libbpf header) stay the same.
		hostView.libbpf = req.Libbpf.Dir
	}
	v := sandboxView
	if c.cfg.NoSandbox {
		v = hostView
	}

	pch := ""
	if c.cfg.UsePCH && pchCompatible(req.Flags) && pchSafe(req.Bundle) {
		// A failure to build the precompiled header only costs time:
		// compile without it (a later compile builds it again).
		pch, _ = c.ensurePCH(ctx, req.Arch, vmlinux, vdigest, hostView)
	}

	spec := &runSpec{
		binds: []bind{
			{host: hostView.libbpf, sandbox: sbLibbpf},
			{host: uapi, sandbox: sbUapi},
			vmlinuxBind(req, vmlinux),
			{host: src, sandbox: sbSrc},
			{host: out, sandbox: sbOut, rw: true},
		},
		chdir:   sbSrc,
		hostDir: src,
		fsize:   c.cfg.MaxOutput,
	}
	rw := append(c.jobRewrites(job, hostView), c.logRewrite...)

	args := c.compileArgs(req, v, pch != "")
	if pch != "" {
		if !c.cfg.NoSandbox {
			spec.binds = append(spec.binds, bind{host: pch, sandbox: sbPCH})
		} else {
			v.pch = pch
			args = c.compileArgs(req, v, true)
		}
	}
	spec.args = args
	spec.noASLR = pch != ""
	res, err := c.run(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	usedPCH := pch != ""
	if usedPCH && (res.code != 0 || res.sig != 0) && isPCHError(res.out) {
		// The precompiled header was refused: compile without it.
		usedPCH = false
		if c.cfg.NoSandbox {
			v.pch = ""
		} else {
			spec.binds = spec.binds[:len(spec.binds)-1]
		}
		spec.args = c.compileArgs(req, v, false)
		spec.noASLR = false
		os.Remove(filepath.Join(out, objName))
		if res, err = c.run(ctx, spec); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
	}

	if err := hostIOError(res); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	if err := c.sandboxFailure(res); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	log := cleanLog(applyRewrites(string(res.out), rw), c.cfg.MaxLog, res.truncated)
	diags := parseDiagnostics(log)
	if reason := c.limitReason(res, log); reason != "" {
		return nil, &Error{Reason: reason, Diagnostics: diags, Log: log + "compile stopped: " + reason + "\n"}
	}
	if res.code != 0 {
		return nil, &Error{Reason: failureReason(diags, log, res.code), Diagnostics: diags, Log: log}
	}

	objPath := filepath.Join(out, objName)
	info, err := os.Stat(objPath)
	if err != nil {
		return nil, fmt.Errorf("compile: clang succeeded but wrote no object: %w", err)
	}
	if info.Size() > c.cfg.MaxOutput {
		return nil, &Error{Reason: c.outputExceeds(), Diagnostics: diags, Log: log}
	}
	obj, err := os.ReadFile(objPath)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	if !c.cfg.KeepDWARF {
		// Like libbpf-bootstrap's `llvm-strip -g`, in process: DWARF is
		// most of an object built against vmlinux.h (~600 KiB of
		// ~650 KiB) and hosts never need it; .BTF and .BTF.ext stay.
		// An object StripDebug refuses (more sections than ELF numbers
		// without extensions, say) comes from what the user submitted.
		stripped, err := elfstrip.StripDebug(obj)
		if errors.Is(err, elfstrip.ErrMalformed) {
			reason := "cannot strip debug information from the object: " + err.Error()
			return nil, &Error{Reason: reason, Diagnostics: diags, Log: log + reason + "\n"}
		} else if err != nil {
			return nil, fmt.Errorf("compile: strip debug information: %w", err)
		}
		if err := os.WriteFile(objPath, stripped, 0o644); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
		obj = stripped
	}

	cmd := []string{"clang"}
	for _, a := range spec.args {
		cmd = append(cmd, userArg(a, rw))
	}
	return &Result{
		Object:      obj,
		Diagnostics: diags,
		Log:         log,
		Command:     cmd,
		Duration:    time.Since(start),
		UsedPCH:     usedPCH,
	}, nil
}

// vmlinuxBind exposes vmlinux.h to the sandbox: the provider's file alone,
// or a per-kernel target's whole directory (with its linux/version.h).
func vmlinuxBind(req Request, vmlinux string) bind {
	if req.Kernel != nil {
		return bind{host: req.Kernel.Dir, sandbox: sbVmlinux}
	}
	return bind{host: vmlinux, sandbox: sbVmlinux + "/vmlinux.h"}
}

// compileArgs are clang's arguments for req: the bundle root first on the
// include path, so that the user's headers win over the farm's, then the
// fixed flags, then the user's flags; a user -O flag replaces -O2.
func (c *Compiler) compileArgs(req Request, v view, pch bool) []string {
	args := []string{"-I", v.src}
	userOpt := slices.ContainsFunc(req.Flags, func(f string) bool { return strings.HasPrefix(f, "-O") })
	for _, f := range c.fixedFlags(req.Arch, v) {
		if f == "-O2" && userOpt {
			continue
		}
		args = append(args, f)
	}
	args = append(args, req.Flags...)
	if pch {
		args = append(args, "-include-pch", v.pch)
	}
	return append(args, "-c", req.Bundle.Entry, "-o", filepath.Join(v.out, objName))
}
