package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
)

// newHostsEnroll is `bpfarm hosts enroll NAME [--labels k=v,...]`.
func newHostsEnroll(g *globals) *cobra.Command {
	var labels []string
	cmd := &cobra.Command{
		Use:   "enroll NAME [--labels k=v,...]",
		Short: "Create a host's token (role host, bound to NAME; admin); the host's previous token is revoked",
		Long: `Create the token of host NAME, role host: the daemon's token. Only it may register,
poll, report and upload BTF as NAME. Enrolling a host again revokes its previous
token. With --labels, those are the host's labels whatever its agent registers with.
The secret is printed once, on stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lb, err := parsePairs("--labels", labels)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.EnrollHost(cmd.Context(), args[0], lb)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, t)
			}
			fmt.Println(t.Secret)
			fmt.Fprintf(os.Stderr, "enrolled host %s: token %q (role host); the secret above is shown only once: "+
				"put it in the daemon's token_file\n", args[0], t.Name)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&labels, "labels", nil, "the host's labels, k=v,... (override what the agent registers)")
	return cmd
}

// newKernelsApprove is `bpfarm kernels approve ID`.
func newKernelsApprove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "approve ID",
		Short: "Trust a kernel whose BTF a host uploaded (admin): its artifacts are then served to every host",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := kernel.ParseID(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			k, err := c.ApproveKernel(cmd.Context(), id.String())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, k)
			}
			fmt.Printf("kernel %s is %s\n", k.ID, k.Trust)
			return nil
		},
	}
}

// newGC is `bpfarm gc [--dry-run]`.
func newGC(g *globals) *cobra.Command {
	var dry bool
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Delete revisions beyond each token's kept count and blobs no row names (admin)",
		Long: `Delete the revisions of every program beyond the kept count of the token that pushed
them (max_revisions; never a revision an assignment pins or a host runs or should
run), with their builds and artifacts, then every blob no row names. The server
also runs it periodically (--gc-interval). --dry-run counts without deleting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.GC(cmd.Context(), dry)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, r)
			}
			verb := "deleted"
			if dry {
				verb = "would delete"
			}
			fmt.Printf("%s %d revisions (%d builds, %d artifacts) and %d unnamed blobs (%s)\n", verb, r.Revisions,
				r.Builds, r.Artifacts, r.Blobs, formatSize(r.Bytes))
			return nil
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only count what would be deleted")
	return cmd
}

// newTokensQuota is `bpfarm tokens quota [NAME] [--max-bytes N] ...`.
func newTokensQuota(g *globals) *cobra.Command {
	var q api.Quota
	cmd := &cobra.Command{
		Use:   "quota [NAME] [--max-bytes N] [--max-revisions N] [--max-builds-per-hour N]",
		Short: "Show or set a token's limits (admin; without NAME: your own token's)",
		Long: `Show a token's limits and usage, or with flags override them for that token (admin).
A negative value restores the server's default.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			set := q != (api.Quota{})
			if set && name == "" {
				return usagef("tokens quota: name the token whose limits to set")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var tq *api.TokenQuota
			if set {
				tq, err = c.SetQuota(cmd.Context(), name, q)
			} else {
				tq, err = c.Quota(cmd.Context(), name)
			}
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, tq)
			}
			src := func(over int64) string {
				if over > 0 {
					return "set for this token"
				}
				return "default"
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "token %s\n", tq.Token)
			fmt.Fprintln(tw, "LIMIT\tVALUE\tUSED\tSOURCE")
			fmt.Fprintf(tw, "max_bytes\t%d (%s)\t%d\t%s\n", tq.MaxBytes, formatSize(tq.MaxBytes), tq.BytesUsed, src(tq.Overrides.MaxBytes))
			fmt.Fprintf(tw, "max_revisions\t%d\t-\t%s\n", tq.MaxRevisions, src(tq.Overrides.MaxRevisions))
			fmt.Fprintf(tw, "max_builds_per_hour\t%d\t%d\t%s\n", tq.MaxBuildsPerHour, tq.BuildsLastHour,
				src(tq.Overrides.MaxBuildsPerHour))
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.Int64Var(&q.MaxBytes, "max-bytes", 0, "bytes the token's revisions may store")
	f.Int64Var(&q.MaxRevisions, "max-revisions", 0, "revisions of each program kept (gc)")
	f.Int64Var(&q.MaxBuildsPerHour, "max-builds-per-hour", 0, "builds the token may queue per hour")
	return cmd
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// trustMark marks an unverified kernel in listings.
func trustMark(k api.Kernel) string {
	if k.Trust != api.KernelUnverified {
		return ""
	}
	return " (unverified: uploaded by host " + strings.TrimSpace(k.SourceHost) + ")"
}
