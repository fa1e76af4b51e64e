package compile

import (
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

// rewrite replaces a sandbox or host path in clang's output with what the
// user should see. An old ending in "/" is a directory prefix; any other
// old must match a whole path.
type rewrite struct{ old, new string }

// baseRewrites are the rewrites of the paths every compile has.
func (c *Compiler) baseRewrites() []rewrite {
	rw := []rewrite{
		{sbVmlinux + "/", "<farm>/"},
		{sbLibbpf + "/", "<farm>/"},
		{sbUapi + "/", "<farm>/"},
		{sbPCH, "<farm>/" + pchName},
		{sbVmlinux, "<farm>/vmlinux"},
		{sbLibbpf, "<farm>/libbpf"},
		{sbUapi, "<farm>/uapi"},
		{"/farm/", "<farm>/"},
		{"/farm", "<farm>"},
		{sbSrc + "/", ""},
		{sbSrc, "."},
		{sbOut + "/", ""},
		{sbOut, "."},
		{c.resourceDir + "/", "<clang>/"},
		{c.resourceDir, "<clang>"},
		{c.clang, "clang"},
	}
	if c.tools != nil {
		for _, t := range c.tools.trees {
			rw = append(rw, rewrite{t + "/", "<clang>/"})
		}
	}
	return rw
}

// jobRewrites are the rewrites of one job's host paths, which clang sees
// without the sandbox and which must not leak either way.
func (c *Compiler) jobRewrites(job string, v view) []rewrite {
	return []rewrite{
		{v.src + "/", ""},
		{v.src, "."},
		{v.out + "/", ""},
		{v.out, "."},
		{job + "/", ""},
		{job, "."},
		{v.vmlinux + "/", "<farm>/"},
		{v.vmlinux, "<farm>/vmlinux"},
		{v.libbpf + "/", "<farm>/"},
		{v.libbpf, "<farm>/libbpf"},
		{v.uapi + "/", "<farm>/"},
		{v.uapi, "<farm>/uapi"},
		{c.cfg.Headers.dir + "/", "<farm>/"},
		{c.cfg.WorkDir + "/", "<work>/"},
	}
}

// isPathByte reports whether b can be part of a path next to a rewritten one.
func isPathByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("_-.+~/@", b) >= 0
}

// applyRewrites rewrites every path in s that starts at a path boundary,
// trying the longest old strings first.
func applyRewrites(s string, rws []rewrite) string {
	rws = append([]rewrite(nil), rws...)
	sort.SliceStable(rws, func(i, j int) bool { return len(rws[i].old) > len(rws[j].old) })

	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '/' || (i > 0 && isPathByte(s[i-1])) {
			continue
		}
		for _, r := range rws {
			if r.old == "" || !strings.HasPrefix(s[i:], r.old) {
				continue
			}
			end := i + len(r.old)
			if !strings.HasSuffix(r.old, "/") && end < len(s) && isPathByte(s[end]) {
				continue
			}
			b.WriteString(s[last:i])
			b.WriteString(r.new)
			last = end
			i = end - 1
			break
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// userArg rewrites one argument of the clang command line.
func userArg(a string, rws []rewrite) string { return applyRewrites(a, rws) }

var (
	stackFrame = regexp.MustCompile(`^(\d+\.\t|\s*\d+\s+\S+\s+0x[0-9a-fA-F]+|\s*#\d+ 0x[0-9a-fA-F]+|\s+0x[0-9a-fA-F]+|Stack dump)`)
)

// cleanLog drops the stack dump of a crashed clang (which names host
// libraries and addresses) and bounds the log to max bytes.
func cleanLog(s string, max int, truncated bool) string {
	var b strings.Builder
	lines := strings.SplitAfter(s, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(line, "PLEASE submit a bug report") {
			b.WriteString("clang stopped abnormally (stack dump omitted)\n")
			for i+1 < len(lines) && stackFrame.MatchString(lines[i+1]) {
				i++
			}
			continue
		}
		b.WriteString(line)
	}
	out := b.String()
	if len(out) > max {
		cut := strings.LastIndexByte(out[:max], '\n')
		if cut < 0 {
			cut = max
		}
		out = out[:cut+1]
		truncated = true
	}
	if truncated {
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += "[output truncated]\n"
	}
	return out
}

var (
	diagFull   = regexp.MustCompile(`^(.+?):(\d+):(\d+): (fatal error|error|warning|note|remark): (.*)$`)
	diagLine   = regexp.MustCompile(`^(.+?):(\d+): (fatal error|error|warning|note|remark): (.*)$`)
	diagDriver = regexp.MustCompile(`^(clang|clang-\d+|<command line>|<built-in>): (fatal error|error|warning|note|remark): (.*)$`)
)

// maxDiagnostics bounds the number of diagnostics kept.
const maxDiagnostics = 500

// parseDiagnostics extracts clang's diagnostics from its (rewritten) output.
// Context lines such as "In file included from" stay in the log only.
func parseDiagnostics(log string) []bpfsrc.Diagnostic {
	var diags []bpfsrc.Diagnostic
	for _, line := range strings.Split(log, "\n") {
		if len(diags) >= maxDiagnostics {
			break
		}
		line = strings.TrimRight(line, "\r")
		if m := diagDriver.FindStringSubmatch(line); m != nil {
			d := bpfsrc.Diagnostic{Severity: m[2], Message: m[3]}
			if strings.HasPrefix(m[1], "<") {
				d.File = m[1]
			}
			diags = append(diags, d)
			continue
		}
		if m := diagFull.FindStringSubmatch(line); m != nil {
			l, _ := strconv.Atoi(m[2])
			col, _ := strconv.Atoi(m[3])
			diags = append(diags, bpfsrc.Diagnostic{File: cleanDiagPath(m[1]), Line: l, Column: col, Severity: m[4], Message: m[5]})
			continue
		}
		if m := diagLine.FindStringSubmatch(line); m != nil {
			l, _ := strconv.Atoi(m[2])
			diags = append(diags, bpfsrc.Diagnostic{File: cleanDiagPath(m[1]), Line: l, Severity: m[3], Message: m[4]})
		}
	}
	return diags
}

// cleanDiagPath cleans a rewritten path: "./x.h" and "a/../x.h" become
// "x.h"; "<farm>/..." and absolute paths stay as they are.
func cleanDiagPath(p string) string {
	if strings.HasPrefix(p, "<") || filepath.IsAbs(p) {
		return p
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return p
	}
	return c
}
