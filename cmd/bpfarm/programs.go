package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/api"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func buildStates(bs []api.Build) string {
	if len(bs) == 0 {
		return "-"
	}
	var parts []string
	for _, b := range bs {
		parts = append(parts, b.Arch+":"+b.State)
	}
	return strings.Join(parts, ",")
}

func newPrograms(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "programs", Short: "List and show programs"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List programs with their latest revision and build status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ps, err := c.Programs(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if ps == nil {
					ps = []api.Program{}
				}
				return printJSON(os.Stdout, ps)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tREVISION\tENTRY\tBUILDS\tUPDATED")
			for _, p := range ps {
				rev, entry, builds := "-", "-", "-"
				if p.Latest != nil {
					rev, entry, builds = p.Latest.Digest[:12], p.Latest.Entry, buildStates(p.Latest.Builds)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, rev, entry, builds, p.UpdatedAt.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a program's revisions and builds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			p, err := c.Program(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			vs, err := c.Verifications(cmd.Context(), p.Name) // verify.go
			if err != nil {
				return err
			}
			as, err := c.Artifacts(cmd.Context(), p.Name, "")
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, struct {
					*api.Program
					Verifications []api.Verification `json:"verifications"`
					Artifacts     []api.Artifact     `json:"artifacts"`
				}{p, vs, as})
			}
			fmt.Printf("program %s (created %s)\n", p.Name, p.CreatedAt.Local().Format("2006-01-02 15:04:05"))
			for i, r := range p.Revisions {
				tag := ""
				if i == 0 {
					tag = " (latest)"
				}
				fmt.Printf("\nrevision %s%s\n  entry %s, %d files, %d bytes, pushed %s by %s\n", r.Digest, tag, r.Entry, r.Files, r.Size,
					r.CreatedAt.Local().Format("2006-01-02 15:04:05"), orDash(r.PushedBy))
				for j := range r.Builds {
					printBuild(indent{os.Stdout}, &r.Builds[j])
				}
				printCoverage(indent{os.Stdout}, r.Digest, as)      // coverage.go
				printVerifications(indent{os.Stdout}, r.Digest, vs) // verify.go
			}
			return nil
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}

// indent prefixes every line written through it with two spaces.
type indent struct{ w io.Writer }

func (i indent) Write(b []byte) (int, error) {
	s := strings.ReplaceAll(string(b), "\n", "\n  ")
	s = strings.TrimSuffix(s, "  ")
	if _, err := io.WriteString(i.w, "  "+s); err != nil {
		return 0, err
	}
	return len(b), nil
}

func newBuilds(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "builds", Short: "List and inspect builds"}
	var program string
	list := &cobra.Command{
		Use:   "list",
		Short: "List builds, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			bs, err := c.Builds(cmd.Context(), program)
			if err != nil {
				return err
			}
			if g.json {
				if bs == nil {
					bs = []api.Build{}
				}
				return printJSON(os.Stdout, bs)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPROGRAM\tREVISION\tARCH\tSTATE\tCREATED")
			for _, b := range bs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Program, b.Revision[:12], b.Arch, b.State,
					b.CreatedAt.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&program, "program", "", "only builds of this program")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a build: state, diagnostics, programs and maps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return usagef("build id %q: not a number", args[0])
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.Build(cmd.Context(), id, 0)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, b)
			}
			printBuild(os.Stdout, b)
			return nil
		},
	}
	logCmd := &cobra.Command{
		Use:   "log ID",
		Short: "Print a build's log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return usagef("build id %q: not a number", args[0])
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			text, err := c.BuildLog(cmd.Context(), id)
			if err != nil {
				return err
			}
			_, err = io.WriteString(os.Stdout, text)
			return err
		},
	}
	cmd.AddCommand(list, show, logCmd)
	return cmd
}

func newTokens(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Manage API tokens (admin)"}
	var role, name string
	create := &cobra.Command{
		Use:   "create --role ROLE --name NAME",
		Short: "Create a token; its secret is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || role == "" {
				return usagef("tokens create needs --role (admin, publisher, reader) and --name")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), name, role)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, t)
			}
			fmt.Println(t.Secret)
			fmt.Fprintf(os.Stderr, "created %s token %q; the secret above is shown only once\n", t.Role, t.Name)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, publisher or reader")
	create.Flags().StringVar(&name, "name", "", "token name")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ts, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if ts == nil {
					ts = []api.Token{}
				}
				return printJSON(os.Stdout, ts)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tLAST USED\tSTATE")
			for _, t := range ts {
				last, state := "-", "active"
				if t.LastUsedAt != nil {
					last = t.LastUsedAt.Local().Format("2006-01-02 15:04:05")
				}
				if t.RevokedAt != nil {
					state = "revoked"
				}
				role := t.Role
				if t.Host != "" {
					role += " (" + t.Host + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, role, t.CreatedAt.Local().Format("2006-01-02 15:04:05"), last, state)
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "revoked token %q\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke, newTokensQuota(g))
	return cmd
}

func newWhoami(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the token's name and role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			w, err := c.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, w)
			}
			role := w.Role
			if w.Host != "" {
				role += " of host " + w.Host
			}
			fmt.Printf("%s (%s) on %s\n", w.Name, role, c.Server())
			return nil
		},
	}
}
