package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bpfarm/bpfarm/client/loader"
)

// Defaults of Config.
const (
	DefaultStateDir   = "/var/lib/bpfarm-agent"
	DefaultWait       = 30 * time.Second
	DefaultHeartbeat  = time.Minute
	DefaultBackoffMin = time.Second
	DefaultBackoffMax = time.Minute
)

// Config configures the agent daemon. It is read from a YAML file (JSON,
// a subset of YAML, works as well):
//
//	server: https://bpfarm.example.com    # or servers: [https://a.example, https://b.example]
//	token_file: /etc/bpfarm-agent/token   # or token: ...; the host's token (bpfarm hosts enroll NAME)
//	public_key: /etc/bpfarm-agent/signing-key.pem
//	name: web-1                           # default: the host name
//	labels: {role: web, zone: eu-1}
//	state_dir: /var/lib/bpfarm-agent
//	pin_dir: /sys/fs/bpf/bpfarm
//	upload_btf: true
//	poll: {wait: 30s, heartbeat: 1m, backoff_min: 1s, backoff_max: 1m}
type Config struct {
	// Server is the bpfarm server's URL (several, comma separated, are
	// replicas of one farm, as Servers).
	Server string `yaml:"server"`
	// Servers lists the URLs of a farm's replicas instead: the agent
	// sticks to one that answers and fails over to the next when it
	// cannot be reached or answers 5xx.
	Servers []string `yaml:"servers"`
	// Token is the host's token (bpfarm hosts enroll NAME); TokenFile names a
	// file holding it instead.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// PublicKey is a PEM file of the server's manifest signing key, the
	// only key artifacts are accepted from. Empty: the key is fetched on
	// first use and pinned in CacheDir/signing-key.pem (trust on first
	// use); a server whose key changes afterwards is refused.
	PublicKey string `yaml:"public_key"`
	// Name is the host's name at the server (default: the host name).
	Name string `yaml:"name"`
	// Labels are matched by assignments' selectors.
	Labels map[string]string `yaml:"labels"`
	// StateDir keeps the agent's host id and state (default
	// DefaultStateDir).
	StateDir string `yaml:"state_dir"`
	// CacheDir keeps the last good artifacts, verified, so that restarts
	// and outages need no server (default STATE_DIR/cache).
	CacheDir string `yaml:"cache_dir"`
	// PinDir is the bpffs directory programs are pinned under (default
	// loader.DefaultPinDir, as `bpfarm-agent load` uses).
	PinDir string `yaml:"pin_dir"`
	// RunDir holds the loader's state files (default
	// loader.DefaultStateDir, as `bpfarm-agent load` uses, so that
	// `bpfarm-agent status` shows what the daemon loaded).
	RunDir string `yaml:"run_dir"`
	// UploadBTF uploads this host's kernel BTF when the server's archive
	// lacks the kernel (the server must run with --agent-btf-upload).
	UploadBTF bool `yaml:"upload_btf"`
	// Mode is how CO-RE relocations are resolved: auto (default),
	// host-btf, min-btf or relocated.
	Mode string `yaml:"mode"`
	// KernelBTF is a BTF file to use as this kernel's BTF.
	KernelBTF string `yaml:"kernel_btf"`
	// MetricsAddr, when set, serves Prometheus metrics at
	// http://MetricsAddr/metrics: the agent's own, and the maps its
	// assignments export (bpfarm assign --export; see package export).
	MetricsAddr string `yaml:"metrics_addr"`
	// Poll tunes the desired-state long poll and retries.
	Poll PollConfig `yaml:"poll"`
}

// PollConfig tunes how the agent watches the server.
type PollConfig struct {
	// Wait is how long the server holds a desired-state request open
	// waiting for a change (default DefaultWait).
	Wait time.Duration `yaml:"wait"`
	// Heartbeat is how often the agent reports its state even when
	// nothing changed (default DefaultHeartbeat).
	Heartbeat time.Duration `yaml:"heartbeat"`
	// BackoffMin and BackoffMax bound the exponential backoff (with
	// jitter) between retries after errors.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// ReadConfig reads a config file (YAML or JSON); unknown keys are errors.
func ReadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("agent config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return cfg, fmt.Errorf("agent config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses a config (YAML or JSON); unknown keys are errors.
func ParseConfig(b []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, err
	}
	return cfg, nil
}

// withDefaults fills in the defaults and checks the config.
func (c Config) withDefaults() (Config, error) {
	if c.Server != "" && len(c.Servers) > 0 {
		return c, errors.New("agent config: server and servers both given: list every URL under servers")
	}
	if len(c.Servers) > 0 {
		c.Server, c.Servers = strings.Join(c.Servers, ","), nil
	}
	if c.Server == "" {
		return c, errors.New("agent config: no server URL")
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("agent config: no name, and the host name is unknown: %w", err)
		}
		c.Name = h
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.CacheDir == "" {
		c.CacheDir = filepath.Join(c.StateDir, "cache")
	}
	if c.PinDir == "" {
		c.PinDir = loader.DefaultPinDir
	}
	if c.RunDir == "" {
		c.RunDir = loader.DefaultStateDir
	}
	if c.Mode == "" {
		c.Mode = string(loader.ModeAuto)
	}
	switch loader.Mode(c.Mode) {
	case loader.ModeAuto, loader.ModeHostBTF, loader.ModeMinBTF, loader.ModeRelocated:
	default:
		return c, fmt.Errorf("agent config: mode %q: want auto, host-btf, min-btf or relocated", c.Mode)
	}
	if c.Token == "" && c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return c, fmt.Errorf("agent config: token file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	p := &c.Poll
	if p.Wait <= 0 {
		p.Wait = DefaultWait
	}
	if p.Heartbeat <= 0 {
		p.Heartbeat = DefaultHeartbeat
	}
	if p.BackoffMin <= 0 {
		p.BackoffMin = DefaultBackoffMin
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = DefaultBackoffMax
	}
	if p.BackoffMax < p.BackoffMin {
		p.BackoffMax = p.BackoffMin
	}
	return c, nil
}
