package agent

import (
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/btf/kernel"
)

func TestConfigServers(t *testing.T) {
	cfg, err := ParseConfig([]byte("servers: [http://a:8080, http://b:8080]\nname: h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = cfg.withDefaults(); err != nil || cfg.Server != "http://a:8080,http://b:8080" {
		t.Fatalf("servers: %q %v", cfg.Server, err)
	}
	cfg.StateDir = t.TempDir()
	host := kernel.HostInfo{ID: kernel.ID{Distro: "debian", Version: "12", Arch: "x86_64", Release: "6.1.0-1-amd64"}, HasBTF: true}
	a, err := New(cfg, Options{Host: &host})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.c.Servers(); len(got) != 2 || got[1] != "http://b:8080" {
		t.Fatalf("client servers: %v", got)
	}
	cfg, _ = ParseConfig([]byte("server: http://a:8080\nservers: [http://b:8080]\nname: h\n"))
	if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("server and servers: %v", err)
	}
}
