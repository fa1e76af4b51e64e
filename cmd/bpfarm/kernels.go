package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/bpfarm/bpfarm/internal/cli"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
)

func newKernels(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "kernels", Short: "Manage the BTF archive"}
	var (
		id        string
		replace   bool
		host      bool
		arch      string
		noModules bool
		image     string
	)
	imp := &cobra.Command{
		Use:   "import [PATH...] [--host]",
		Short: "Import kernels: btfhub-archive trees, .btf.tar.xz, raw BTF, vmlinux, linux-image .deb",
		Long: `Import kernels into the BTF archive. PATH may be a btfhub-archive tree (every
DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz under it), a single .btf.tar.xz, a raw
BTF file, a vmlinux ELF (stripped or not), a Debian linux-image-*.deb or a
compressed kernel image. --id DISTRO/VERSION/ARCH/RELEASE names a kernel
where the file does not. --host imports the running kernel
(/sys/kernel/btf/vmlinux and its modules, identity from /etc/os-release and
uname). Every program's latest revision is relocated for each new kernel.
--image VMLINUZ --id ID attaches a kernel image to the kernel ID (imported
now from PATH, or earlier): the farm then verifies every artifact for that
kernel on the real kernel, booted in a VM.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !host && image == "" {
				return usagef("kernels import needs a PATH, --host or --image")
			}
			if image != "" && id == "" {
				return usagef("--image needs --id DISTRO/VERSION/ARCH/RELEASE: the kernel to attach it to")
			}
			var opt client.ImportOptions
			opt.Replace = replace
			if id != "" {
				kid, err := kernel.ParseID(id)
				if err != nil {
					return cli.Usage(err)
				}
				if len(args) > 1 {
					return usagef("--id names one kernel: give one PATH")
				}
				opt.ID = kid
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var all []api.KernelImported
			if host {
				k, err := source.Host(source.Options{})
				if err != nil {
					return err
				}
				if noModules {
					k.Modules = nil
				}
				res, err := c.ImportKernel(ctx, k, opt)
				if err != nil {
					return err
				}
				all = append(all, res.Kernels...)
			}
			var refused []api.KernelRefused
			trees := false
			for _, p := range args {
				res, err := importPath(ctx, c, p, opt, !g.json)
				if err != nil {
					return err
				}
				all = append(all, res.Kernels...)
				for _, rf := range res.Refused {
					refused = append(refused, api.KernelRefused{Path: rf.Path, Error: rf.Err.Error()})
				}
				if st, err := os.Stat(p); err == nil && st.IsDir() || len(res.Refused) > 0 || len(res.Kernels) > 1 {
					trees = true
				}
			}
			if image != "" { // verification on real kernels
				k, err := putImage(ctx, c, opt.ID.String(), image, !g.json)
				if err != nil {
					return err
				}
				if len(all) == 0 {
					if g.json {
						return printJSON(os.Stdout, k)
					}
					fmt.Printf("kernel %s: image attached (%s); its artifacts will be verified on it\n", k.ID, filepath.Base(image))
					return nil
				}
				for i := range all {
					if all[i].Kernel.ID == k.ID {
						all[i].Kernel = *k
					}
				}
			}
			sum := client.TreeImport{Kernels: all, Refused: make([]client.RefusedFile, len(refused))}
			var failed error
			if len(refused) > 0 {
				failed = &exitError{code: 1, msg: fmt.Sprintf("%s (refused: %s)", sum.Summary(), refusedNames(refused))}
			}
			if g.json {
				if err := printJSON(os.Stdout, api.KernelImport{Kernels: all, Refused: refused}); err != nil {
					return err
				}
				return failed
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			if len(all) > 0 {
				fmt.Fprintln(tw, "KERNEL\tBTF\tMODULES\tSTATE\tRELOCATIONS QUEUED")
			}
			for _, k := range all {
				state := "imported"
				if !k.Created {
					state = "already present"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", k.Kernel.ID, size(k.Kernel.BTF.Size), k.Kernel.Modules, state, k.Queued)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if trees && failed == nil {
				fmt.Println(sum.Summary())
			}
			return failed
		},
	}
	f := imp.Flags()
	f.StringVar(&id, "id", "", "kernel id DISTRO/VERSION/ARCH/RELEASE, where the file does not name it")
	f.BoolVar(&replace, "replace", false, "let another BTF replace an existing kernel id")
	f.BoolVar(&host, "host", false, "import the running kernel")
	f.BoolVar(&noModules, "no-modules", false, "with --host: skip the modules' BTF")
	f.StringVar(&image, "image", "", "kernel image (vmlinuz) to attach to the kernel --id, to verify artifacts on the real kernel")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the archive's kernels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ks, err := c.Kernels(cmd.Context(), arch)
			if err != nil {
				return err
			}
			if g.json {
				if ks == nil {
					ks = []api.Kernel{}
				}
				return printJSON(os.Stdout, ks)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KERNEL\tBTF\tMODULES\tIMAGE\tARTIFACTS\tSOURCE")
			for _, k := range ks {
				name := k.ID
				if k.Default {
					name += " (default)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%d\t%s\n", name+trustMark(k), size(k.BTF.Size), k.Modules, k.HasImage, k.Artifacts, k.Source)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&arch, "arch", "", "only kernels of this arch")
	cmd.AddCommand(imp, list, newKernelsApprove(g), newKernelsReference(g), newKernelsPin(g), newKernelsUnpin(g))
	return cmd
}

// importPath imports one path: a btfhub tree walks to every
// DISTRO/VERSION/ARCH/RELEASE.btf.tar.xz, going on past refused files
// (each named on stderr as it is refused); a file is uploaded as is.
func importPath(ctx context.Context, c *client.Client, path string, opt client.ImportOptions, progress bool) (*client.TreeImport, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		res, err := uploadKernel(ctx, c, path, info.Size(), opt, progress)
		if err != nil {
			return nil, err
		}
		out := &client.TreeImport{Kernels: res.Kernels}
		for _, r := range res.Refused { // a packed tree (tar)
			rf := client.RefusedFile{Path: r.Path, Err: errors.New(r.Error)}
			fmt.Fprintf(os.Stderr, "bpfarm: refused %s: %v\n", rf.Path, rf.Err)
			out.Refused = append(out.Refused, rf)
		}
		return out, nil
	}
	if opt.ID != (kernel.ID{}) {
		return nil, usagef("--id names one kernel: a btfhub-archive tree names its kernels by their paths")
	}
	upload := func(ctx context.Context, p string, n int64, o client.ImportOptions) (*api.KernelImport, error) {
		return uploadKernel(ctx, c, p, n, o, progress)
	}
	return c.ImportTree(ctx, path, opt, upload, func(rf client.RefusedFile) {
		fmt.Fprintf(os.Stderr, "bpfarm: refused %s: %v\n", rf.Path, rf.Err)
	})
}

func uploadKernel(ctx context.Context, c *client.Client, path string, n int64, opt client.ImportOptions, progress bool) (*api.KernelImport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var body io.Reader = f
	if progress && term.IsTerminal(int(os.Stderr.Fd())) {
		bar := progressbar.DefaultBytes(n, "uploading "+filepath.Base(path))
		defer bar.Finish()
		pr := progressbar.NewReader(f, bar)
		body = &pr
	}
	return c.ImportKernelFile(ctx, path, body, opt)
}

// size formats a byte count.
func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// putImage attaches a kernel image to the archive's kernel kid.
func putImage(ctx context.Context, c *client.Client, kid, path string, progress bool) (*api.Kernel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var body io.Reader = f
	if progress && term.IsTerminal(int(os.Stderr.Fd())) {
		bar := progressbar.DefaultBytes(st.Size(), "uploading "+filepath.Base(path))
		defer bar.Finish()
		pr := progressbar.NewReader(f, bar)
		body = &pr
	}
	return c.PutKernelImage(ctx, kid, body)
}

// refusedNames lists the refused files' paths, for the closing line.
func refusedNames(rs []api.KernelRefused) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Path
	}
	return strings.Join(names, ", ")
}

func newKernelsReference(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reference",
		Short: "Show each arch's reference kernel: the vmlinux.h that CO-RE compiles use",
		Long: `Show each arch's reference kernel, whose vmlinux.h every CO-RE compile for
that arch uses: the kernel an admin pinned (kernels pin), else the arch's
newest kernel by release, which changes when a newer kernel arrives.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			rs, err := c.ReferenceKernels(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, rs)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ARCH\tREFERENCE KERNEL\tCHOSEN")
			for _, r := range rs {
				k, how := r.Kernel, "newest"
				if k == "" {
					k, how = "-", "none in the archive: this server's own BTF"
				} else if r.Pinned {
					how = "pinned"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Arch, k, how)
			}
			return tw.Flush()
		},
	}
}

func newKernelsPin(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pin DISTRO/VERSION/ARCH/RELEASE",
		Short: "Pin a kernel as its arch's reference kernel for CO-RE compiles (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := kernel.ParseID(args[0]); err != nil {
				return cli.Usage(err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.PinReference(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, r)
			}
			fmt.Printf("%s reference kernel: %s (pinned)\n", r.Arch, r.Kernel)
			return nil
		},
	}
}

func newKernelsUnpin(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unpin ARCH",
		Short: "Unpin an arch's reference kernel: its newest kernel is the reference again (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			arch, err := kernel.NormalizeArch(args[0])
			if err != nil {
				return cli.Usage(err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.UnpinReference(cmd.Context(), arch); err != nil {
				return err
			}
			fmt.Printf("%s reference kernel: unpinned (the newest %s kernel)\n", arch, arch)
			return nil
		},
	}
}
