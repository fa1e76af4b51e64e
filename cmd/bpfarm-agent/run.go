package main

import (
	"log/slog"
	"os"

	"github.com/bpfarm/bpfarm/internal/cli"

	"github.com/spf13/cobra"

	"github.com/bpfarm/bpfarm/client/agent"
)

// newRunCommand is `bpfarm-agent run`: the daemon.
func newRunCommand() *cobra.Command {
	var (
		configPath, logLevel string
		logJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent daemon: register, watch the desired state, converge onto it",
		Long: `Run the agent daemon. It registers this host with the server (name, kernel,
labels), then long-polls the host's desired state — the programs assigned to
hosts with its labels, each at the revision to run — and converges onto it:
programs are fetched (signature and digests verified, last good artifacts
cached), loaded the first time, swapped when a new revision arrives (the new
one attached before the old one is detached), rolled back to the last good
revision when a new one fails, and unloaded when no longer assigned. Every
program's state is reported to the server after each change and at every
heartbeat.

When the server is unreachable everything keeps running. On restart,
everything pinned is adopted without being detached. On SIGTERM the daemon
exits and the programs stay loaded, attached and pinned.

The config file is YAML (or JSON):

  server: https://bpfarm.example.com     # or servers: [https://a.example, https://b.example] (replicas: fail over)
  token_file: /etc/bpfarm-agent/token     # the host's token: bpfarm hosts enroll NAME
  public_key: /etc/bpfarm-agent/signing-key.pem
  name: web-1                             # default: the host name
  labels: {role: web, zone: eu-1}
  state_dir: /var/lib/bpfarm-agent        # host id, state, cache/
  pin_dir: /sys/fs/bpf/bpfarm
  upload_btf: true                        # server needs --agent-btf-upload
  poll: {wait: 30s, heartbeat: 1m, backoff_min: 1s, backoff_max: 1m}

Other keys: token, cache_dir, run_dir (the loader's state files, default
/run/bpfarm), mode (auto, host-btf, min-btf, relocated), kernel_btf,
metrics_addr (serve Prometheus metrics at http://ADDR/metrics: the agent's
own, and the maps assignments export with bpfarm assign --export). The global --server and --token
apply when the file gives none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level %q: want debug, info, warn or error", logLevel)
			}
			opts := &slog.HandlerOptions{Level: lvl}
			var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
			if logJSON {
				h = slog.NewJSONHandler(os.Stderr, opts)
			}
			log := slog.New(h)
			slog.SetDefault(log)
			if configPath == "" {
				return usagef("run needs --config FILE")
			}
			cfg, err := agent.ReadConfig(configPath)
			if err != nil {
				return cli.Usage(err)
			}
			// The global flags (or BPFARM_SERVER, BPFARM_TOKEN) fill in what
			// the file leaves out.
			if f := cmd.Flags().Lookup("server"); f != nil && cfg.Server == "" && len(cfg.Servers) == 0 {
				cfg.Server = f.Value.String()
			}
			if f := cmd.Flags().Lookup("token"); f != nil && cfg.Token == "" && cfg.TokenFile == "" {
				cfg.Token = f.Value.String()
			}
			agent.Version = version
			a, err := agent.New(cfg, agent.Options{Logger: log})
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "/etc/bpfarm-agent/config.yaml", "config file (YAML or JSON)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON lines")
	return cmd
}
