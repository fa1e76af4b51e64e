package main

import (
	"bytes"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/bpfsrc/headerset"
)

func newHeaders(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "headers",
		Short: "Manage the libbpf header sets builds compile with",
	}
	var name string
	imp := &cobra.Command{
		Use:   "import DIR|TARBALL --name NAME",
		Short: "Import a libbpf header set (admin)",
		Long: `Import a libbpf header set: a directory of headers (its *.h files, or those of
its bpf/ subdirectory, e.g. libbpf's src/ or an install prefix's include/) or a
tar.gz of *.h files. It must hold bpf_helpers.h. A set is immutable: import
changed headers under a new name. The newest imported set is the default of
bpfarm push; --headers NAME picks another, --headers builtin the farm's own.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return usagef("headers import: --name is required")
			}
			if err := headerset.ValidName(name); err != nil {
				return usagef("%v", err)
			}
			var body bytes.Buffer
			st, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			if st.IsDir() {
				files, err := headerset.ReadDir(args[0])
				if err != nil {
					return err
				}
				set, err := headerset.New(files)
				if err != nil {
					return err
				}
				if err := set.WriteTarGz(&body); err != nil {
					return err
				}
			} else {
				if st.Size() > headerset.Limits.MaxTotalSize+1<<20 {
					return fmt.Errorf("%s: %d bytes; a header set is at most %d", args[0], st.Size(), headerset.Limits.MaxTotalSize)
				}
				data, err := os.ReadFile(args[0])
				if err != nil {
					return err
				}
				body.Write(data)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.ImportHeaderSet(cmd.Context(), name, &body)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, res)
			}
			state := "imported"
			if !res.Created {
				state = "unchanged"
			}
			version := res.Version
			if version == "" {
				version = "?"
			}
			fmt.Printf("%s %s: libbpf %s, %d headers, %d bytes, digest %s\n", state, res.Name, version, res.Files, res.Size, res.Digest)
			return nil
		},
	}
	imp.Flags().StringVar(&name, "name", "", "name of the set, e.g. libbpf-1.5")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the header sets (the default is marked *)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			sets, err := c.HeaderSets(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, sets)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tLIBBPF\tFILES\tSIZE\tDIGEST\tIMPORTED")
			for _, s := range sets {
				mark := ""
				if s.Default {
					mark = " *"
				}
				imported := "built-in"
				if !s.Builtin {
					imported = s.CreatedAt.Format("2006-01-02 15:04") + " by " + s.ImportedBy
				}
				fmt.Fprintf(tw, "%s%s\t%s\t%d\t%d\t%.12s\t%s\n", s.Name, mark, s.Version, s.Files, s.Size, s.Digest, imported)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(imp, list)
	return cmd
}
