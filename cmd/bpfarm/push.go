package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bpfarm/bpfarm/internal/cli"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/client"
)

func newPush(g *globals) *cobra.Command {
	var (
		name, entry   string
		arches, flags []string
		wait          bool
		perKernel     bool
		headers       string
	)
	cmd := &cobra.Command{
		Use:   "push PATH",
		Short: "Upload BPF C sources and build them",
		Long: `Upload BPF C sources and build them. PATH is a *.bpf.c file (bundled with
the local headers it includes, transitively) or a directory holding exactly one
*.bpf.c entry (or --entry FILE). The farm provides <vmlinux.h>, the libbpf
headers and the kernel UAPI headers; headers in your bundle come first.

With --wait (the default on a terminal) it shows build progress and exits 0
only when every build succeeded; on failure it prints the compiler's
diagnostics at your own file:line:col.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("wait") {
				wait = term.IsTerminal(int(os.Stdout.Fd()))
			}
			b, err := bpfsrc.Collect(args[0], entry, bpfsrc.DefaultLimits)
			if err != nil {
				return err
			}
			if name == "" {
				name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(b.Entry), ".c"), ".bpf")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return push(cmd.Context(), c, g, name, b, client.PushOptions{Arches: cli.SplitComma(arches), Flags: flags, PerKernel: perKernel, Headers: headers}, wait)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "program name (default: the entry's base name without .bpf.c)")
	f.StringVar(&entry, "entry", "", "entry file, relative to the directory PATH")
	f.StringSliceVar(&arches, "arch", nil, "target arches: x86_64, arm64 (default x86_64)")
	f.StringArrayVar(&flags, "cflag", nil, "extra compiler flag: -DNAME[=VALUE], -UNAME, -W..., -std=..., -O1..-O3 (repeatable)")
	f.BoolVar(&wait, "wait", false, "wait for the builds and show progress (default: on a terminal)")
	f.StringVar(&headers, "headers", "", "libbpf header set to compile with (bpfarm headers list; default: the newest imported, else builtin)")
	f.BoolVar(&perKernel, "per-kernel", false, "compile against each kernel's own vmlinux.h and LINUX_VERSION_CODE (sources that are not CO-RE)")
	return cmd
}

func push(ctx context.Context, c *client.Client, g *globals, name string, b *bpfsrc.Bundle, opt client.PushOptions, wait bool) error {
	res, err := c.Push(ctx, name, b, opt)
	if err != nil {
		return err
	}
	var out strings.Builder
	if !g.json {
		state := "new revision"
		if !res.Created {
			state = "existing revision"
		}
		fmt.Fprintf(&out, "pushed %s: %s %s (%d files, entry %s)\n", res.Program, state, res.Revision[:12], len(b.Files), b.Entry)
	}
	if wait {
		for i := range res.Builds {
			bd, err := waitWithProgress(ctx, c, &res.Builds[i], !g.json)
			if err != nil {
				return err
			}
			res.Builds[i] = *bd
		}
	}
	if g.json {
		enc := json.NewEncoder(&out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		for i := range res.Builds {
			printBuild(&out, &res.Builds[i])
		}
	}
	var failed []string
	for _, bd := range res.Builds {
		if wait && bd.State == api.StateFailed {
			failed = append(failed, fmt.Sprintf("build %d of %s (%s) failed: %s", bd.ID, res.Program, bd.Arch, bd.Error))
		}
	}
	if len(failed) == 0 {
		_, err := io.WriteString(os.Stdout, out.String())
		return err
	}
	// What failed and why comes first, then the details (diagnostics).
	fmt.Fprintln(os.Stderr, "bpfarm: "+strings.Join(failed, "; "))
	if g.json {
		io.WriteString(os.Stdout, out.String())
	} else {
		io.WriteString(os.Stderr, out.String())
	}
	return &exitError{code: 1}
}

// waitWithProgress follows a build to its end, with a spinner on a
// terminal.
func waitWithProgress(ctx context.Context, c *client.Client, b *api.Build, show bool) (*api.Build, error) {
	if b.Done() {
		return b, nil
	}
	var bar *progressbar.ProgressBar
	if show && term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions(-1,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(fmt.Sprintf("build %d (%s): %s", b.ID, b.Arch, b.State)),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					bar.Add(1)
				}
			}
		}()
	}
	last := b.State
	done, err := c.WaitBuild(ctx, b.ID, func(nb *api.Build) {
		if bar != nil && nb.State != last {
			last = nb.State
			bar.Describe(fmt.Sprintf("build %d (%s): %s", nb.ID, nb.Arch, nb.State))
		}
	})
	if bar != nil {
		bar.Finish()
	}
	return done, err
}

// printBuild prints a build's outcome: its programs and maps, or its
// diagnostics.
func printBuild(w io.Writer, b *api.Build) {
	took := ""
	if b.DurationMS > 0 {
		took = fmt.Sprintf(" in %s", (time.Duration(b.DurationMS) * time.Millisecond).String())
	}
	cached := ""
	if b.CachedFrom != 0 {
		cached = fmt.Sprintf(" (cached from build %d)", b.CachedFrom)
	}
	kernel := ""
	if b.Kernel != "" {
		kernel = " for " + b.Kernel
	}
	fmt.Fprintf(w, "build %d %s%s: %s%s%s\n", b.ID, b.Arch, kernel, b.State, took, cached)
	for _, d := range b.Diagnostics {
		fmt.Fprintln(w, d.String())
	}
	if b.State == api.StateFailed && len(b.Diagnostics) == 0 && b.Error != "" {
		fmt.Fprintln(w, b.Error)
	}
	if o := b.Inspection; o != nil && b.State == api.StateSucceeded {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  PROGRAM\tTYPE\tSECTION\tATTACH\tINSNS\tCO-RE\n")
		for _, p := range o.Programs {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\n", p.Name, p.Type, p.Section, orDash(p.AttachTo), p.Instructions, p.CORERelocations)
		}
		fmt.Fprintf(tw, "  MAP\tTYPE\tKEY\tVALUE\tMAX ENTRIES\tRECORDS / EXPORT\n")
		for _, m := range o.Maps {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%s\n", m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, mapNote(m))
		}
		tw.Flush()
		fmt.Fprintf(w, "  license %q, %d CO-RE relocations, object %s (%d bytes)\n", o.License, o.CORERelocations,
			shortDigest(b.Object), objSize(b.Object))
	}
}

// mapNote says what a map's records are (ring buffers, perf arrays) or how
// it can be exported as metrics.
func mapNote(m inspect.Map) string {
	switch {
	case m.Record != nil && m.Record.Type != "":
		return m.Record.Type + " (" + m.Record.Origin + ")"
	case m.Record != nil:
		return "undecoded: " + m.Record.Note
	case m.Export != "":
		return "export: " + m.Export
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortDigest(b *api.Blob) string {
	if b == nil || len(b.Digest) < 12 {
		return "-"
	}
	return b.Digest[:12]
}

func objSize(b *api.Blob) int64 {
	if b == nil {
		return 0
	}
	return b.Size
}
