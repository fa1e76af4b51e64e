package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bpfarm/bpfarm/internal/cli"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/api"
)

// staleAfter flags hosts not seen for this long in listings.
const staleAfter = 5 * time.Minute

// parsePairs parses K=V pairs given as repeated and/or comma-separated
// flag values.
func parsePairs(flag string, vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range cli.SplitComma(vals) {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want KEY=VALUE", flag, v)
		}
		out[k] = val
	}
	return out, nil
}

func formatPairs(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func newAssign(g *globals) *cobra.Command {
	var (
		selector, programs, sets, maxEntries []string
		exports                              []string
		revision, iface, xdpMode, cgroup     string
		tcDirection                          string
		noAttach                             bool
	)
	cmd := &cobra.Command{
		Use:   "assign NAME [--selector k=v[,k=v]] [--revision R] [--programs a,b] [--set VAR=VALUE]... [--interface IF] [--export MAP[:KIND]]...",
		Short: "Run a program on every host whose labels match the selector (publisher)",
		Long: `Assign program NAME to the hosts whose labels include every k=v pair of
--selector (no selector: every host). Their agents load the pinned --revision,
or else the program's latest revision with an artifact built for each host's
kernel, and follow new revisions as they are pushed. When several assignments
of one program match a host, the newest wins.

--export MAP[:counter|gauge|histogram] (repeatable) makes the agents export the
map as Prometheus metrics on their /metrics (metrics_addr in the agent's
config): labels from the key's fields, counters or gauges from the value's
numeric fields, Prometheus histograms from log2 histograms (a slots[] array).
Without a kind: histogram when the value holds slots[], else counter.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := parsePairs("--selector", selector)
			if err != nil {
				return err
			}
			setMap := map[string]string{}
			for _, v := range sets { // values may hold commas
				k, val, ok := strings.Cut(v, "=")
				if !ok || k == "" {
					return usagef("--set %q: want VAR=VALUE", v)
				}
				setMap[k] = val
			}
			me, err := parsePairs("--max-entries", maxEntries)
			if err != nil {
				return err
			}
			maxMap := map[string]uint32{}
			for k, v := range me {
				n, err := strconv.ParseUint(v, 0, 32)
				if err != nil || n == 0 {
					return usagef("--max-entries %s=%s: want a positive number", k, v)
				}
				maxMap[k] = uint32(n)
			}
			var exps []api.Export
			for _, v := range cli.SplitComma(exports) {
				e, err := api.ParseExport(v)
				if err != nil {
					return usagef("--export: %v", err)
				}
				exps = append(exps, e)
			}
			if err := api.ValidateExports(exps); err != nil {
				return usagef("--export: %v", err)
			}
			if tcDirection != "" && tcDirection != "ingress" && tcDirection != "egress" {
				return usagef("--tc-direction %q: want ingress or egress", tcDirection)
			}
			h, err := g.client()
			if err != nil {
				return err
			}
			req := api.AssignmentRequest{Program: args[0], Selector: sel, Revision: revision, Options: api.LoadOptions{
				Programs: cli.SplitComma(programs), Set: setMap, MaxEntries: maxMap, NoAttach: noAttach,
				Attach: api.AttachOptions{Interface: iface, XDPMode: xdpMode, CgroupPath: cgroup, TCDirection: tcDirection}},
				Exports: exps}
			if len(req.Options.Set) == 0 {
				req.Options.Set = nil
			}
			if len(req.Options.MaxEntries) == 0 {
				req.Options.MaxEntries = nil
			}
			a, err := h.Assign(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, a)
			}
			rev := "latest"
			if a.Revision != "" {
				rev = shortRev(a.Revision)
			}
			fmt.Printf("assignment %d: %s (revision %s) on hosts matching %s\n", a.ID, a.Program, rev, formatPairs(a.Selector))
			if len(a.Exports) > 0 {
				fmt.Printf("  exports %s\n", formatExports(a.Exports))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&selector, "selector", nil, "host labels that must all match: k=v[,k=v] (default: every host)")
	f.StringVar(&revision, "revision", "", "pin a revision (digest or unique prefix); default: the latest with an artifact for each host's kernel")
	f.StringSliceVar(&programs, "programs", nil, "load only these programs of the object (comma-separated)")
	f.StringArrayVar(&sets, "set", nil, "rewrite a const volatile global before load: VAR=VALUE (repeatable)")
	f.StringSliceVar(&maxEntries, "max-entries", nil, "override a map's max_entries: MAP=N (repeatable)")
	f.StringVar(&iface, "interface", "", "network interface for xdp, tc and tcx programs")
	f.StringVar(&xdpMode, "xdp-mode", "", "xdp attach mode: generic, native or offload (default: the kernel's choice)")
	f.StringVar(&tcDirection, "tc-direction", "", "direction of plain tc programs: ingress (default) or egress")
	f.StringVar(&cgroup, "cgroup", "", "cgroup2 directory for cgroup programs (default /sys/fs/cgroup)")
	f.BoolVar(&noAttach, "no-attach", false, "load and pin the programs without attaching them")
	f.StringSliceVar(&exports, "export", nil, "export a map as Prometheus metrics from the agents' /metrics: MAP[:counter|gauge|histogram] (repeatable)")
	return cmd
}

// formatExports formats exports as MAP[:KIND],...
func formatExports(es []api.Export) string {
	if len(es) == 0 {
		return "-"
	}
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return strings.Join(parts, ",")
}

func newAssignments(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "assignments", Short: "List program assignments"}
	var program string
	list := &cobra.Command{
		Use:   "list",
		Short: "List assignments, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.client()
			if err != nil {
				return err
			}
			as, err := h.Assignments(cmd.Context(), program)
			if err != nil {
				return err
			}
			if g.json {
				if as == nil {
					as = []api.Assignment{}
				}
				return printJSON(os.Stdout, as)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPROGRAM\tSELECTOR\tREVISION\tOPTIONS\tEXPORTS\tBY\tCREATED")
			for _, a := range as {
				rev := "latest"
				if a.Revision != "" {
					rev = shortRev(a.Revision)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Program, formatPairs(a.Selector), rev,
					formatOptions(a.Options), formatExports(a.Exports), orDash(a.CreatedBy), a.CreatedAt.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&program, "program", "", "only assignments of this program")
	cmd.AddCommand(list)
	return cmd
}

func formatOptions(o api.LoadOptions) string {
	var parts []string
	if len(o.Programs) > 0 {
		parts = append(parts, "programs="+strings.Join(o.Programs, "+"))
	}
	for k, v := range o.Set {
		parts = append(parts, "set "+k+"="+v)
	}
	for k, v := range o.MaxEntries {
		parts = append(parts, fmt.Sprintf("max_entries %s=%d", k, v))
	}
	if o.NoAttach {
		parts = append(parts, "no-attach")
	}
	if o.Attach.Interface != "" {
		parts = append(parts, "interface="+o.Attach.Interface)
	}
	if o.Attach.XDPMode != "" {
		parts = append(parts, "xdp="+o.Attach.XDPMode)
	}
	if o.Attach.TCDirection != "" {
		parts = append(parts, "tc="+o.Attach.TCDirection)
	}
	if o.Attach.CgroupPath != "" {
		parts = append(parts, "cgroup="+o.Attach.CgroupPath)
	}
	if len(parts) == 0 {
		return "-"
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func newUnassign(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unassign ID",
		Short: "Remove an assignment; hosts it no longer selects unload the program (publisher)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return usagef("assignment id %q: not a positive number", args[0])
			}
			h, err := g.client()
			if err != nil {
				return err
			}
			if err := h.Unassign(cmd.Context(), id); err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(os.Stderr, "removed assignment %d\n", id)
			}
			return nil
		},
	}
}

// programSummary sums up a host's reported programs, e.g.
// "2 loaded, 1 rolled_back".
func programSummary(ps []api.HostProgram) string {
	if len(ps) == 0 {
		return "-"
	}
	counts := map[string]int{}
	for _, p := range ps {
		counts[p.State]++
	}
	var parts []string
	for _, s := range []string{api.HostProgramLoaded, api.HostProgramRolledBack, api.HostProgramFailed, api.HostProgramPending} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

func newHosts(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "hosts", Short: "List and show the hosts agents registered"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List hosts: kernel, labels, last seen, program states",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.client()
			if err != nil {
				return err
			}
			hs, err := h.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if hs == nil {
					hs = []api.Host{}
				}
				return printJSON(os.Stdout, hs)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKERNEL\tLABELS\tBTF\tTOKEN\tLAST SEEN\tPROGRAMS")
			for _, x := range hs {
				seen := x.LastSeen.Local().Format("2006-01-02 15:04:05")
				if time.Since(x.LastSeen) > staleAfter {
					seen += " (stale)"
				}
				kern := x.Kernel
				if x.ArchiveKernel == "" {
					kern += " (not in archive)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Name, kern, formatPairs(x.Labels), yesNo(x.HasBTF),
					hostToken(x), seen, programSummary(x.Programs))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a host and the state of each of its programs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.client()
			if err != nil {
				return err
			}
			x, err := h.Host(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, x)
			}
			fmt.Printf("host %s (id %s, hostname %s, agent %s)\n", x.Name, orDash(x.HostID), orDash(x.Hostname), orDash(x.AgentVersion))
			fmt.Printf("  kernel   %s, BTF %s\n", x.Kernel, yesNo(x.HasBTF))
			if x.ArchiveKernel == "" {
				fmt.Printf("  archive  not in the archive: no artifact can be relocated for it\n")
			} else if x.ArchiveKernel != x.Kernel {
				fmt.Printf("  archive  %s (same release)\n", x.ArchiveKernel)
			}
			fmt.Printf("  labels   %s\n", formatPairs(x.Labels))
			fmt.Printf("  token    %s\n", hostToken(*x))
			fmt.Printf("  seen     %s (first %s)\n", x.LastSeen.Local().Format("2006-01-02 15:04:05"),
				x.FirstSeen.Local().Format("2006-01-02 15:04:05"))
			if len(x.Programs) == 0 {
				fmt.Println("  no programs reported")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  PROGRAM\tSTATE\tREVISION\tDESIRED\tSINCE\tERROR")
			for _, p := range x.Programs {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Program, p.State, orDash(shortRev(p.Revision)),
					orDash(shortRev(p.Desired)), p.Since.Local().Format("2006-01-02 15:04:05"), orDash(oneLine(p.Error)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return printExportStatuses(os.Stdout, x.Programs)
		},
	}
	cmd.AddCommand(list, show, newHostsEnroll(g))
	return cmd
}

// hostToken says which token a host uses: the one it registered with,
// flagged when it is not the host's live enrolled token.
func hostToken(h api.Host) string {
	switch {
	case h.Token == "":
		return "-"
	case h.Enrolled == "":
		return h.Token + " (not enrolled)"
	case h.Enrolled != h.Token:
		return h.Token + " (revoked; enrolled: " + h.Enrolled + ")"
	}
	return h.Token
}

// shortRev shortens a revision digest for tables.
func shortRev(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine returns the first line of s (verifier errors hold the log's tail).
func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// printExportStatuses prints, for every program that exports maps, how
// each is exported (metric families and key labels) or why it cannot be.
func printExportStatuses(w io.Writer, ps []api.HostProgram) error {
	var rows []string
	for _, p := range ps {
		for _, e := range p.Exports {
			if e.Error != "" {
				rows = append(rows, fmt.Sprintf("  %s\t%s\t%s\tNOT EXPORTED: %s", p.Program, e.Map, orDash(e.Kind), oneLine(e.Error)))
				continue
			}
			labels := "-"
			if len(e.Labels) > 0 {
				labels = strings.Join(e.Labels, ",")
			}
			rows = append(rows, fmt.Sprintf("  %s\t%s\t%s\t%s {%s}", p.Program, e.Map, e.Kind, strings.Join(e.Metrics, ", "), labels))
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(w, "  exports:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PROGRAM\tMAP\tKIND\tMETRICS {LABELS}")
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	return tw.Flush()
}
