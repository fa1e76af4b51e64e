// Command bpfarm is the bpfarm server (bpfarm serve) and its user CLI.
//
// Exit status: 0 success, 1 the operation failed, 2 usage error. Every
// failure prints one line saying what and why first.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bpfarm/bpfarm/internal/cli"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/client"
)

// exitError carries a specific exit status after its message was printed.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

type globals struct {
	server, token, tokenFile string
	json                     bool
}

// usagef returns a usage error (exit status 2).
var usagef = cli.Usagef

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "bpfarm: "+ee.msg)
		}
		return ee.code
	case cli.IsUsage(err):
		fmt.Fprintln(os.Stderr, "bpfarm: "+err.Error())
		fmt.Fprintln(os.Stderr, "Run 'bpfarm --help' for usage.")
		return 2
	default:
		fmt.Fprintln(os.Stderr, "bpfarm: "+err.Error())
		return 1
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "bpfarm",
		Short:         "bpfarm: compile eBPF programs once, run them on every kernel",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return cli.ApplyEnv(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cli.Usage(err) })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", client.DefaultServer, "server URL; several, comma separated, are replicas failed over between (env BPFARM_SERVER)")
	pf.StringVar(&g.token, "token", "", "API token (env BPFARM_TOKEN)")
	pf.StringVar(&g.tokenFile, "token-file", "", "file holding the API token (env BPFARM_TOKEN_FILE); default: ./data/admin.token when present and no token is given")
	pf.BoolVar(&g.json, "json", false, "machine-readable JSON output")
	root.AddCommand(newServe(), newPush(g), newPrograms(g), newBuilds(g), newTokens(g), newWhoami(g),
		newKernels(g), newHeaders(g), newArtifact(g), newHosts(g), newAssign(g), newAssignments(g), newUnassign(g), newGC(g))
	return root
}

func (g *globals) client() (*client.Client, error) {
	tok, err := cli.Token(g.token, g.tokenFile)
	if err != nil {
		return nil, err
	}
	c, err := client.New(g.server, tok)
	if err != nil {
		return nil, cli.Usage(err)
	}
	c.UserAgent = "bpfarm-cli"
	return c, nil
}
