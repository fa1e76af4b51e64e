// Command bpfarm-agent is bpfarm's thin client and host daemon: it fetches
// the artifact built for this host's kernel, verifies its digest and
// signature, and loads it with cilium/ebpf — no compiler, kernel headers or
// BTF needed on the host.
//
// Exit status: 0 success, 1 the operation failed, 2 usage error. Every
// failure prints one line saying what and why first.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfarm/bpfarm/internal/cli"
	"github.com/bpfarm/bpfarm/manifest"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bpfarm/bpfarm/btf/kernel"
	"github.com/bpfarm/bpfarm/btf/source"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/client/loader"
	"github.com/bpfarm/bpfarm/client/observe"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

type globals struct {
	server, token, tokenFile string
	json                     bool
}

// usagef returns a usage error (exit status 2).
var usagef = cli.Usagef

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRoot()
	err := root.ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "bpfarm-agent: "+err.Error())
	if cli.IsUsage(err) {
		fmt.Fprintln(os.Stderr, "Run 'bpfarm-agent --help' for usage.")
		os.Exit(2)
	}
	os.Exit(1)
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "bpfarm-agent",
		Short:         "Fetch and load bpfarm artifacts for this host's kernel",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return cli.ApplyEnv(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cli.Usage(err) })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", client.DefaultServer, "server URL; several, comma separated, are replicas failed over between (env BPFARM_SERVER)")
	pf.StringVar(&g.token, "token", "", "API token, reader role is enough (env BPFARM_TOKEN)")
	pf.StringVar(&g.tokenFile, "token-file", "", "file holding the API token (env BPFARM_TOKEN_FILE); default: ./"+cli.DefaultTokenFile+" when present and no token is given")
	pf.BoolVar(&g.json, "json", false, "machine-readable JSON output")
	root.AddCommand(newLoad(g), newUnload(g), newStatus(g), newRunCommand(), newEvents(g), newMaps(g))
	return root
}

// loadFlags are the options shared by load, unload and status.
type loadFlags struct {
	pinDir, stateDir, cacheDir string
}

func (l *loadFlags) register(f *pflag.FlagSet) {
	f.StringVar(&l.pinDir, "pin-dir", "/sys/fs/bpf/bpfarm", "bpffs directory for pinned maps and links (PIN-DIR/NAME/)")
	f.StringVar(&l.stateDir, "state-dir", "/run/bpfarm", "directory for the agent's state files")
	f.StringVar(&l.cacheDir, "cache-dir", "/var/cache/bpfarm-agent", "last good artifacts and the pinned server key")
}

func newLoad(g *globals) *cobra.Command {
	var (
		lf                              loadFlags
		revision, pubkey, kernelBTF     string
		kernelID, mode, iface, cgroup   string
		noAttach, uploadBTF             bool
		requireVerified, follows, force bool
		ff                              followFlags
		programs                        []string
		sets, maxEntries                []string
	)
	cmd := &cobra.Command{
		Use:   "load NAME",
		Short: "Load a program's artifact for this host's kernel and attach it",
		Long: `Resolve NAME's artifact for this host's kernel, verify its digests and its
ed25519 signature (against --pubkey, else the key pinned on first use in
--cache-dir), check that it is the program, revision, kernel and arch asked
for and not a revision older than the newest loaded here (unless asked for
with --revision), load it with cilium/ebpf, attach every selected program by its
ELF section, pin maps and links under PIN-DIR/NAME/ and exit, leaving the
programs running. The host's BTF is used when present; otherwise the
artifact's minimized BTF or its pre-relocated object.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			setMap, err := cli.KeyValues("--set", sets)
			if err != nil {
				return err
			}
			maxMap := map[string]uint32{}
			me, err := cli.KeyValues("--max-entries", maxEntries)
			if err != nil {
				return err
			}
			for k, v := range me {
				n, err := strconv.ParseUint(v, 0, 32)
				if err != nil || n == 0 {
					return usagef("--max-entries %s=%s: want a positive number", k, v)
				}
				maxMap[k] = uint32(n)
			}
			switch loader.Mode(mode) {
			case loader.ModeAuto, loader.ModeHostBTF, loader.ModeMinBTF, loader.ModeRelocated:
			default:
				return usagef("--mode %q: want auto, host-btf, min-btf or relocated", mode)
			}
			host, err := kernel.Host()
			if err != nil {
				return err
			}
			kid := host.ID.String()
			if kernelID != "" {
				id, err := kernel.ParseID(kernelID)
				if err != nil {
					return cli.Usage(err)
				}
				kid = id.String() // canonical: aarch64 is arm64
			}
			// Parse the host's BTF while the artifact downloads: BTF-attached
			// programs (tp_btf, fentry, ...) and host-BTF relocation need it,
			// and parsing it is most of a load's own cost.
			var btfCache *btf.Cache
			if host.HasBTF && kernelBTF == "" {
				btfCache = btf.NewCache()
				go btfCache.Kernel()
			}
			tok, err := cli.Token(g.token, g.tokenFile)
			if err != nil {
				return err
			}
			c, err := client.New(g.server, tok)
			if err != nil {
				return cli.Usage(err)
			}
			c.UserAgent = "bpfarm-agent/" + version
			ctx := cmd.Context()
			pub, pinned, err := c.PinnedKey(ctx, pubkey, lf.cacheDir)
			if err != nil {
				return err
			}
			if pinned {
				fmt.Fprintf(os.Stderr, "bpfarm-agent: pinned the server's signing key %s in %s (trust on first use)\n",
					manifest.KeyID(pub), filepath.Join(lf.cacheDir, client.PinnedKeyFile))
			}
			fopt := client.FetchOptions{PublicKey: pub, CacheDir: lf.cacheDir,
				RequireVerified: requireVerified, VerifiedPrograms: cli.SplitComma(programs)}
			f, err := c.FetchArtifact(ctx, name, kid, revision, fopt)
			if err != nil && uploadBTF && client.IsNotFound(err) && host.HasBTF {
				// An unknown kernel: give the server this host's BTF, then
				// wait for the relocation.
				k, herr := source.Host(source.Options{})
				if herr != nil {
					return herr
				}
				if _, herr := c.ImportKernel(ctx, k, client.ImportOptions{}); herr != nil {
					return fmt.Errorf("%v; uploading this host's BTF failed too: %w", err, herr)
				}
				f, err = c.FetchArtifact(ctx, name, kid, revision, fopt)
			}
			if err != nil {
				return err
			}
			if err := client.CheckSupported(f.Manifest, cli.SplitComma(programs)); err != nil {
				if !force {
					return fmt.Errorf("%w (--force loads it anyway)", err)
				}
				fmt.Fprintf(os.Stderr, "bpfarm-agent: warning: %v; loading it anyway (--force)\n", err)
			}
			a := &loader.Artifact{Name: name, Revision: f.Manifest.Revision, Object: f.Object, MinBTF: f.MinBTF, Relocated: f.Relocated,
				KernelBTF: f.Manifest.KernelBTF}
			opt := loader.Options{PinDir: lf.pinDir, StateDir: lf.stateDir, Programs: cli.SplitComma(programs), NoAttach: noAttach,
				Set: setMap, MaxEntries: maxMap, KernelBTF: kernelBTF, Mode: loader.Mode(mode), Revision: f.Manifest.Revision,
				Attach: loader.AttachOptions{Interface: iface, CgroupPath: cgroup}, BTFCache: btfCache}
			l, err := loader.Load(ctx, a, opt)
			if err != nil {
				return err
			}
			if err := client.RecordLoaded(lf.cacheDir, f.Manifest); err != nil {
				fmt.Fprintf(os.Stderr, "bpfarm-agent: warning: %v\n", err)
			}
			if g.json && !follows {
				return printJSON(withoutBTF(l))
			}
			from := ""
			if f.FromCache {
				from = " (server unreachable: last good artifact from the cache)"
			}
			out := os.Stdout
			if follows {
				out = os.Stderr // stdout carries the records
			}
			fmt.Fprintf(out, "loaded %s revision %s for %s, mode %s%s\n", name, f.Manifest.Revision[:12], f.Manifest.Kernel, l.Mode, from)
			printProgramsTo(out, l)
			if !follows {
				return nil
			}
			set, err := observe.FromLoaded(l)
			if err != nil {
				return err
			}
			// Ctrl-C ends the stream; the programs stay loaded.
			return follow(ctx, set, ff, g.json, os.Stdout, os.Stderr)
		},
	}
	f := cmd.Flags()
	lf.register(f)
	f.StringVar(&revision, "revision", "", "revision to load (digest or unique prefix); default the newest (which must not be older than the newest loaded here)")
	f.BoolVar(&noAttach, "no-attach", false, "load and pin programs without attaching them (like bpftool prog loadall)")
	f.StringSliceVar(&programs, "programs", nil, "load only these programs (comma-separated), like libbpf's autoload")
	f.StringArrayVar(&sets, "set", nil, "rewrite a const volatile global before load: VAR=VALUE (repeatable)")
	f.StringArrayVar(&maxEntries, "max-entries", nil, "override a map's max_entries: MAP=N (repeatable)")
	f.StringVar(&pubkey, "pubkey", "", "PEM file of the server's signing key (default: pinned on first use in --cache-dir)")
	f.StringVar(&kernelBTF, "kernel-btf", "", "BTF file to use as this kernel's BTF instead of /sys/kernel/btf/vmlinux")
	f.StringVar(&kernelID, "kernel", "", "kernel id DISTRO/VERSION/ARCH/RELEASE (default: this host's)")
	f.StringVar(&mode, "mode", "auto", "auto, host-btf, min-btf (the artifact's minimized BTF) or relocated (the pre-relocated object)")
	f.StringVar(&iface, "interface", "", "network interface for xdp, tc and tcx programs")
	f.StringVar(&cgroup, "cgroup", "/sys/fs/cgroup", "cgroup for cgroup programs")
	f.BoolVar(&uploadBTF, "upload-btf", false, "when the server lacks this kernel, upload this host's BTF and wait for the artifact")
	f.BoolVar(&follows, "follow", false, "after loading, follow the set's records as bpfarm-agent events does (Ctrl-C stops following; the programs stay loaded)")
	f.StringArrayVar(&ff.maps, "map", nil, "with --follow: follow only this ring buffer or perf event array (repeatable)")
	f.Uint64Var(&ff.count, "count", 0, "with --follow: stop after this many records")
	f.DurationVar(&ff.duration, "duration", 0, "with --follow: stop after this long")
	f.BoolVar(&requireVerified, "require-verified", false,
		"refuse an artifact unless the farm verified it on this exact kernel (booted it and the verifier accepted every loaded program)")
	f.BoolVar(&force, "force", false,
		"load an artifact even when its report says this kernel lacks a feature a program needs (status unsupported)")
	return cmd
}

func newUnload(g *globals) *cobra.Command {
	var lf loadFlags
	cmd := &cobra.Command{
		Use:   "unload NAME",
		Short: "Detach and unpin everything NAME loaded",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loader.Unload(args[0], loader.Options{PinDir: lf.pinDir, StateDir: lf.stateDir}); err != nil {
				return err
			}
			if !g.json {
				fmt.Printf("unloaded %s\n", args[0])
			}
			return nil
		},
	}
	lf.register(cmd.Flags())
	return cmd
}

func newStatus(g *globals) *cobra.Command {
	var lf loadFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List what is loaded: programs, attach points, revision, since when, run counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ls, err := loader.Status(loader.Options{PinDir: lf.pinDir, StateDir: lf.stateDir})
			if err != nil {
				return err
			}
			if g.json {
				if ls == nil {
					ls = []loader.Loaded{}
				}
				for i := range ls {
					ls[i].BTF = nil
				}
				return printJSON(ls)
			}
			if len(ls) == 0 {
				fmt.Println("nothing loaded")
				return nil
			}
			for i := range ls {
				fmt.Printf("%s revision %s, mode %s, since %s\n", ls[i].Name, short(ls[i].Revision), ls[i].Mode,
					ls[i].Since.Local().Format(time.DateTime))
				printPrograms(&ls[i])
			}
			return nil
		},
	}
	lf.register(cmd.Flags())
	return cmd
}

func printPrograms(l *loader.Loaded) { printProgramsTo(os.Stdout, l) }

func printProgramsTo(w io.Writer, l *loader.Loaded) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PROGRAM\tID\tATTACHED TO\tRUNS\tRUN TIME")
	for _, p := range l.Programs {
		at := p.AttachPoint
		if !p.Attached {
			at = "(not attached)"
		}
		if p.Error != "" {
			at += ": " + p.Error
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%s\n", p.Name, p.ID, at, p.RunCount, time.Duration(p.RunTimeNS))
	}
	tw.Flush()
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
