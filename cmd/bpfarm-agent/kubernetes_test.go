package main

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/bpfarm/bpfarm/client/agent"
	"github.com/bpfarm/bpfarm/internal/deploytest"
)

// TestKubernetesAgent checks the agent DaemonSet of deploy/kubernetes
// against `bpfarm-agent run`: its arguments are flags the command accepts,
// the config file it names is mounted from a ConfigMap and decodes
// strictly, the metrics port is the container's, the token, state, run
// and pin directories are mounted, and the server URL names the API
// Service.
func TestKubernetesAgent(t *testing.T) {
	tree, err := deploytest.Load("../../deploy/kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	var w *deploytest.Workload
	for _, c := range tree.Containers() {
		if c.Object.Kind == "DaemonSet" && !c.Object.Patch && c.Object.Name() == "bpfarm-agent" {
			w = &c
		}
	}
	if w == nil {
		t.Fatal("no bpfarm-agent DaemonSet")
	}
	c := w.Container
	if got := deploytest.ImageName(c.Image); got != "bpfarm-agent" {
		t.Errorf("image %s, want bpfarm-agent", c.Image)
	}
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Fatalf("args %q: want run first", c.Args)
	}
	run, _, err := newRoot().Find([]string{"run"})
	if err != nil || run.Name() != "run" {
		t.Fatalf("bpfarm-agent run: %v", err)
	}
	if err := run.ParseFlags(c.Args[1:]); err != nil {
		t.Fatal(err)
	}
	if rest := run.Flags().Args(); len(rest) > 0 {
		t.Errorf("arguments %q are not flags", rest)
	}
	for _, e := range c.Env {
		t.Errorf("variable %s: the agent reads its config file", e.Name)
	}

	// The config file, from its ConfigMap.
	path := run.Flags().Lookup("config").Value.String()
	v, key, ok := deploytest.MountFor(w.Pod, c, path)
	if !ok || v.ConfigMap == nil {
		t.Fatalf("--config %s is not on a mounted ConfigMap", path)
	}
	for _, it := range v.ConfigMap.Items {
		if it.Path == key {
			key = it.Key
		}
	}
	data, _ := tree.ConfigMapData(v.ConfigMap.Name)
	if data[key] == "" {
		t.Fatalf("ConfigMap %s has no key %s", v.ConfigMap.Name, key)
	}
	cfg, err := agent.ParseConfig([]byte(data[key]))
	if err != nil {
		t.Fatalf("config %s: %v", path, err)
	}

	// Metrics on the container's port.
	_, port, err := net.SplitHostPort(cfg.MetricsAddr)
	if err != nil {
		t.Fatalf("metrics_addr %q: %v", cfg.MetricsAddr, err)
	}
	if len(c.Ports) != 1 || strconv.Itoa(int(c.Ports[0].ContainerPort)) != port {
		t.Errorf("ports %+v, but metrics_addr %s", c.Ports, cfg.MetricsAddr)
	}

	// The token from a Secret; the agent's directories on the host.
	if v, key, ok := deploytest.MountFor(w.Pod, c, cfg.TokenFile); !ok || v.Secret == nil {
		t.Errorf("token_file %s is not on a mounted Secret", cfg.TokenFile)
	} else if d, _ := tree.SecretData(v.Secret.SecretName); d[key] == "" {
		t.Errorf("token_file %s: Secret %s has no key %s", cfg.TokenFile, v.Secret.SecretName, key)
	}
	for what, dir := range map[string]string{"state_dir": cfg.StateDir, "run_dir": cfg.RunDir, "pin_dir": cfg.PinDir} {
		v, inside, ok := deploytest.MountFor(w.Pod, c, dir)
		if dir == "" || !ok || v.HostPath == nil {
			t.Errorf("%s %q is not on a host directory", what, dir)
			continue
		}
		if got := strings.TrimSuffix(v.HostPath.Path+"/"+inside, "/"); got != dir {
			t.Errorf("%s %s is the host's %s", what, dir, got)
		}
	}

	// The server: the API Service of the same namespace.
	u, err := url.Parse(cfg.Server)
	if err != nil {
		t.Fatalf("server %q: %v", cfg.Server, err)
	}
	labels := strings.Split(u.Hostname(), ".")
	svcs := tree.Find("Service", labels[0])
	if len(svcs) != 1 {
		t.Fatalf("server %s: no Service %s", cfg.Server, labels[0])
	}
	if ns := tree.Kustomizations["base"].Namespace; len(labels) < 2 || labels[1] != ns {
		t.Errorf("server %s: not namespace %s", cfg.Server, ns)
	}
	svc := svcs[0].Value.(*corev1.Service)
	if svc.Spec.Selector["app.kubernetes.io/component"] != "api" || len(svc.Spec.Ports) != 1 ||
		strconv.Itoa(int(svc.Spec.Ports[0].Port)) != u.Port() {
		t.Errorf("server %s: Service %s: %+v", cfg.Server, svc.Name, svc.Spec)
	}
	// The pod uses the host's network: the service name resolves only
	// with the cluster's DNS.
	if w.Pod.HostNetwork && w.Pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork with dnsPolicy %q: the server's Service name would not resolve", w.Pod.DNSPolicy)
	}
}
