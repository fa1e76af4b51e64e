package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/bpfarm/bpfarm/internal/cli"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/manifest"
)

// maxArtifactFile bounds each downloaded artifact file.
const maxArtifactFile = 256 << 20

func newArtifact(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "artifact", Short: "Fetch per-kernel artifacts"}
	var (
		kernelID, revision, dir, pubkey string
	)
	get := &cobra.Command{
		Use:   "get NAME --kernel DISTRO/VERSION/ARCH/RELEASE [-o DIR]",
		Short: "Write a program's manifest, CO-RE object, minimized BTF and pre-relocated object for a kernel",
		Long: `Resolve NAME's artifact for a kernel (the exact id, else the same release under
another distro entry) and write into DIR: manifest.json (signed), the CO-RE
object, the kernel's minimized BTF and the object pre-relocated for that
kernel (loadable by libbpf/bpftool on that kernel without any BTF). Every
file is checked against the manifest's sha256, and the manifest's signature
against --pubkey (a PEM file) or else the server's key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if kernelID == "" {
				return usagef("artifact get needs --kernel DISTRO/VERSION/ARCH/RELEASE")
			}
			id, err := kernel.ParseID(kernelID)
			if err != nil {
				return cli.Usage(err)
			}
			kernelID = id.String() // canonical: aarch64 is arm64
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			res, err := c.Resolve(ctx, args[0], kernelID, revision, 30*time.Second)
			if err != nil {
				return err
			}
			var pub ed25519.PublicKey
			if pubkey != "" {
				if pub, err = manifest.ReadPublicKeyFile(pubkey); err != nil {
					return err
				}
			} else {
				k, err := c.SigningKey(ctx)
				if err != nil {
					return err
				}
				raw, err := base64.StdEncoding.DecodeString(k.PublicKey)
				if err != nil || len(raw) != ed25519.PublicKeySize {
					return fmt.Errorf("server signing key: not an ed25519 key")
				}
				pub = raw
			}
			m := res.Manifest
			req := client.Request{Program: args[0], Revision: revision, Kernel: kernelID, ResolvedRevision: res.Revision,
				ResolvedKernel: res.Kernel, Match: res.Match}
			if err := client.CheckArtifact(pub, req, m); err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			var written []string
			for _, role := range []string{manifest.FileObject, manifest.FileMinBTF, manifest.FileRelocated} {
				f := m.Files[role]
				data, err := c.Blob(ctx, f.SHA256, maxArtifactFile)
				if err != nil {
					return err
				}
				if err := m.VerifyFile(role, data); err != nil {
					return fmt.Errorf("artifact of %s for %s: %w", args[0], kernelID, err)
				}
				p := filepath.Join(dir, filepath.Base(f.Name))
				if err := os.WriteFile(p, data, 0o644); err != nil {
					return err
				}
				written = append(written, p)
			}
			mb, _ := json.MarshalIndent(m, "", "  ")
			mp := filepath.Join(dir, "manifest.json")
			if err := os.WriteFile(mp, append(mb, '\n'), 0o644); err != nil {
				return err
			}
			written = append([]string{mp}, written...)
			if g.json {
				return printJSON(os.Stdout, struct {
					*api.Resolved
					Files []string `json:"files"`
				}{res, written})
			}
			match := ""
			if res.Match != "exact" {
				match = fmt.Sprintf(" (matched by release: %s)", res.Artifact.Kernel)
			}
			fmt.Printf("%s revision %s for %s%s: %s, signed by key %s\n", m.Program, m.Revision[:12], m.Kernel, match,
				m.Status, m.Signature.KeyID)
			printReport(os.Stdout, m.Report)
			for _, p := range written {
				fmt.Printf("wrote %s\n", p)
			}
			return nil
		},
	}
	get.Flags().StringVar(&kernelID, "kernel", "", "kernel id DISTRO/VERSION/ARCH/RELEASE")
	get.Flags().StringVar(&revision, "revision", "", "revision (digest or unique prefix); default the newest")
	get.Flags().StringVarP(&dir, "output", "o", ".", "directory to write the files into")
	get.Flags().StringVar(&pubkey, "pubkey", "", "PEM file of the server's signing key to verify against (default: ask the server)")
	cmd.AddCommand(get)
	return cmd
}

func printReport(w *os.File, r manifest.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PROGRAM\tSTATUS\tRELOCATIONS\tDETAIL")
	for _, p := range r.Programs {
		detail := programDetail(p) // coverage.go
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", p.Name, p.Status, p.Relocations, orDash(detail))
	}
	tw.Flush()
}
