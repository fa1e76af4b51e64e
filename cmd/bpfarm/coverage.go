package main

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/manifest"
)

// printCoverage prints a revision's per-kernel status: one line per
// artifact, with what makes it not ok (an unsupported program's missing
// kernel features, poisoned fields, a failure).
func printCoverage(w io.Writer, revision string, as []api.Artifact) {
	printRevisionTable(w, "kernels:", "KERNEL\tSTATUS\tDETAIL", revision, as,
		func(a api.Artifact) (string, string) { return a.Revision, a.Kernel },
		func(tw io.Writer, a api.Artifact) {
			status := a.Status
			if a.State != "done" {
				status = a.State
			}
			detail := a.Error
			if a.Report != nil {
				detail = strings.TrimSuffix(reportDetail(*a.Report), "; ")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", a.Kernel, orDash(status), orDash(detail))
		})
}

// printRevisionTable prints, under title, one indented table of the items
// of revision sorted by kernel (key gives an item's revision and kernel),
// each item written by row; nothing when revision has no items. The table
// goes to w in one write: w may indent each write.
func printRevisionTable[T any](w io.Writer, title, header, revision string, items []T, key func(T) (rev, kernel string), row func(tw io.Writer, item T)) {
	var mine []T
	for _, it := range items {
		if r, _ := key(it); r == revision {
			mine = append(mine, it)
		}
	}
	if len(mine) == 0 {
		return
	}
	sort.SliceStable(mine, func(i, j int) bool {
		_, a := key(mine[i])
		_, b := key(mine[j])
		return a < b
	})
	var buf bytes.Buffer
	fmt.Fprintln(&buf, title)
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  "+header)
	for _, it := range mine {
		row(tw, it)
	}
	tw.Flush()
	w.Write(buf.Bytes())
}

// reportDetail names, program by program, what keeps a report from ok.
func reportDetail(r manifest.Report) string {
	var b strings.Builder
	for _, p := range r.Programs {
		if d := programDetail(p); d != "" && p.Status != manifest.StatusOK {
			fmt.Fprintf(&b, "%s: %s; ", p.Name, strings.TrimSuffix(d, "; "))
		}
	}
	return b.String()
}

// programDetail describes one program's report: its error, the kernel
// features it lacks, its poisoned relocations and missing targets.
func programDetail(p manifest.ProgramReport) string {
	var b strings.Builder
	if p.Error != "" {
		b.WriteString(p.Error + "; ")
	}
	if p.Reason != "" {
		// The reason names every missing feature and target.
		b.WriteString(p.Reason + "; ")
	}
	for _, x := range p.Poisoned {
		g := ""
		if x.Guarded {
			g = " (guarded)"
		}
		fmt.Fprintf(&b, "%s %s%s; ", x.Kind, x.Path, g)
	}
	if p.Reason == "" {
		for _, t := range p.Targets {
			if t.Status == "missing" {
				fmt.Fprintf(&b, "missing %s %s; ", t.Kind, t.Name)
			}
		}
	}
	return b.String()
}
