package deploytest

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

const root = "../../deploy/kubernetes"

func load(t *testing.T) *Tree {
	t.Helper()
	tree, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"base", "overlays/dev", "components/kvm"} {
		if tree.Kustomizations[dir] == nil {
			t.Fatalf("no kustomization %s", dir)
		}
	}
	return tree
}

func workload[T any](t *testing.T, tree *Tree, kind, name string) T {
	t.Helper()
	objs := tree.Find(kind, name)
	if len(objs) != 1 {
		t.Fatalf("%s %s: %d resources", kind, name, len(objs))
	}
	return objs[0].Value.(T)
}

// TestImages: the bpfarm images are the Dockerfile's targets; other images
// (PostgreSQL, MinIO) only run in the dev overlay.
func TestImages(t *testing.T) {
	tree := load(t)
	images, _, err := DockerTargets("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if images["bpfarm"] != "server" || images["bpfarm-agent"] != "agent" {
		t.Fatalf("Dockerfile images: %v", images)
	}
	seen := map[string]bool{}
	for _, w := range tree.Containers() {
		name := ImageName(w.Container.Image)
		if w.Object.Patch && w.Container.Image == "" {
			continue
		}
		if _, ok := images[name]; ok {
			seen[name] = true
			continue
		}
		if !strings.HasPrefix(w.Object.Dir, "overlays/") {
			t.Errorf("%s: container %s: image %s is not built by the Dockerfile (%v)", w.Object.File, w.Container.Name,
				w.Container.Image, images)
		}
	}
	for name := range images {
		if !seen[name] {
			t.Errorf("no workload runs image %s", name)
		}
	}
	for dir, k := range tree.Kustomizations {
		for _, im := range k.Images {
			if _, ok := images[im.Name]; !ok {
				t.Errorf("%s: images: %s is not an image of the Dockerfile", dir, im.Name)
			}
		}
	}
	// The api and worker images are the server, the agent's the agent.
	for kind, names := range map[string][]string{"Deployment": {"bpfarm-api", "bpfarm-worker"}, "DaemonSet": {"bpfarm-agent"}} {
		for _, n := range names {
			o := tree.Find(kind, n)
			if len(o) != 1 {
				t.Fatalf("%s %s: %d", kind, n, len(o))
			}
			tpl, _ := o[0].PodTemplate()
			want := "bpfarm"
			if kind == "DaemonSet" {
				want = "bpfarm-agent"
			}
			if got := ImageName(tpl.Spec.Containers[0].Image); got != want {
				t.Errorf("%s %s runs %s, want %s", kind, n, got, want)
			}
		}
	}
}

// TestWorkloads checks what the issue asks of each workload.
func TestWorkloads(t *testing.T) {
	tree := load(t)
	api := workload[*appsv1.Deployment](t, tree, "Deployment", "bpfarm-api")
	if api.Spec.Replicas == nil || *api.Spec.Replicas != 2 {
		t.Errorf("api replicas: %v", api.Spec.Replicas)
	}
	ac := api.Spec.Template.Spec.Containers[0]
	if ac.ReadinessProbe == nil || ac.ReadinessProbe.HTTPGet == nil || ac.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		ac.LivenessProbe == nil || ac.LivenessProbe.HTTPGet == nil || ac.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("api probes: %+v %+v", ac.ReadinessProbe, ac.LivenessProbe)
	}
	for _, d := range []*appsv1.Deployment{api, workload[*appsv1.Deployment](t, tree, "Deployment", "bpfarm-worker")} {
		for _, c := range d.Spec.Template.Spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
				len(sc.Capabilities.Add) > 0 || sc.Privileged != nil && *sc.Privileged ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: %s: want every capability dropped, none added, no escalation: %+v", d.Name, c.Name, sc)
			}
		}
		ps := d.Spec.Template.Spec
		if ps.HostPID || ps.HostNetwork || ps.HostIPC || ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil ||
			!*ps.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: host namespaces or root: %+v", d.Name, ps.SecurityContext)
		}
		for _, v := range ps.Volumes {
			if v.HostPath != nil {
				t.Errorf("%s mounts the host's %s", d.Name, v.HostPath.Path)
			}
		}
	}

	ds := workload[*appsv1.DaemonSet](t, tree, "DaemonSet", "bpfarm-agent")
	ps := ds.Spec.Template.Spec
	if !ps.HostPID || !ps.HostNetwork {
		t.Errorf("agent: hostPID %v hostNetwork %v", ps.HostPID, ps.HostNetwork)
	}
	c := ps.Containers[0]
	caps := c.SecurityContext.Capabilities
	if !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(slices.Sorted(slices.Values(caps.Add)), []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"}) ||
		c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
		t.Errorf("agent capabilities: %+v", c.SecurityContext)
	}
	for _, host := range []string{"/sys/fs/bpf", "/sys/kernel/btf", "/sys/kernel/tracing"} {
		v, _, ok := MountFor(&ps, &c, host)
		if !ok || v.HostPath == nil || v.HostPath.Path != host {
			t.Errorf("agent: %s is not the host's: %+v", host, v)
		}
	}
}

// TestServices: every Service selects the pods of a workload of the tree
// (or names an external host), on ports the pods have; the database URL
// and the S3 endpoint name Services of the tree.
func TestServices(t *testing.T) {
	tree := load(t)
	services := map[string]*corev1.Service{}
	for _, o := range tree.Objects {
		if o.Kind != "Service" || o.Patch {
			continue
		}
		s := o.Value.(*corev1.Service)
		services[s.Name] = s
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			if s.Spec.ExternalName == "" || len(s.Spec.Selector) > 0 {
				t.Errorf("service %s: external name %q, selector %v", s.Name, s.Spec.ExternalName, s.Spec.Selector)
			}
			continue
		}
		checkSelects(t, tree, o.Dir, s)
	}
	// The dev overlay's patches turn the external names into services
	// selecting its own servers.
	for _, o := range tree.Objects {
		if o.Kind == "Service" && o.Patch {
			s := o.Value.(*corev1.Service)
			if services[s.Name] == nil {
				t.Errorf("%s patches service %s, which does not exist", o.File, s.Name)
				continue
			}
			if s.Spec.Type != corev1.ServiceTypeClusterIP || s.Spec.ExternalName != "" {
				t.Errorf("%s: service %s: %+v", o.File, s.Name, s.Spec)
			}
			checkSelects(t, tree, o.Dir, s)
		}
	}
	data, _ := tree.ConfigMapData("bpfarm-server")
	secrets, _ := tree.SecretData("bpfarm-secrets")
	db, err := url.Parse(secrets["database-url"])
	if err != nil || db.Scheme != "postgres" {
		t.Fatalf("database-url: %v", err)
	}
	for what, hostport := range map[string]string{"database-url": db.Host, "BPFARM_S3_ENDPOINT": data["BPFARM_S3_ENDPOINT"]} {
		host, port, _ := strings.Cut(hostport, ":")
		s := services[host]
		if s == nil {
			t.Errorf("%s names %s: no such service", what, host)
			continue
		}
		if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return itoa(p.Port) == port }) {
			t.Errorf("%s names port %s: service %s has %+v", what, port, host, s.Spec.Ports)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

// checkSelects checks that s selects a workload of dir's tree and that its
// target ports are ports of that workload's containers.
func checkSelects(t *testing.T, tree *Tree, dir string, s *corev1.Service) {
	t.Helper()
	for _, o := range tree.Objects {
		tpl, ok := o.PodTemplate()
		if !ok || o.Patch || !visible(o.Dir, dir) || !matches(s.Spec.Selector, tpl.Labels) {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.String() == "0" {
				continue // the port itself
			}
			found := false
			for _, c := range tpl.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == p.TargetPort.String() || itoa(cp.ContainerPort) == p.TargetPort.String() {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("service %s: target port %s is no port of %s", s.Name, p.TargetPort.String(), o.Name())
			}
		}
		return
	}
	t.Errorf("service %s (%s) selects no workload: %v", s.Name, dir, s.Spec.Selector)
}

// visible reports whether a resource of dir is part of the build of from
// (the same kustomization, or base from an overlay).
func visible(dir, from string) bool { return dir == from || dir == "base" }

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestStrict: what Load refuses, on copies of the tree.
func TestStrict(t *testing.T) {
	if _, err := Load(root); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file, old, new string
		want                 string
	}{
		{"unknown field in a manifest", "base/api.yaml", "replicas: 2", "replicas: 2\n  replcas: 3", "unknown field"},
		{"misspelled container field", "base/worker.yaml", "readinessProbe:", "readinesProbe:", "unknown field"},
		{"unknown field in a kustomization", "base/kustomization.yaml", "resources:", "resorces:", "unknown field"},
		{"missing file", "base/kustomization.yaml", "  - agent.yaml", "  - agent.yaml\n  - gone.yaml", "gone.yaml"},
		{"unlisted file", "base/kustomization.yaml", "  - agent.yaml\n", "", "agent.yaml is not listed"},
		{"unknown kind", "base/namespace.yaml", "kind: Namespace", "kind: Namespaces", "not a kind"},
		{"wrong type", "base/api.yaml", "replicas: 2", "replicas: two", "replicas"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyTree(t, root, dir)
			path := filepath.Join(dir, c.file)
			b, err := os.ReadFile(path)
			if err != nil || !strings.Contains(string(b), c.old) {
				t.Fatalf("%s has no %q: %v", c.file, c.old, err)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(string(b), c.old, c.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = Load(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: %v, want an error naming %q", err, c.want)
			}
		})
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestImageName(t *testing.T) {
	for in, want := range map[string]string{"bpfarm": "bpfarm", "bpfarm:1.2": "bpfarm",
		"registry.example:5000/team/bpfarm-agent:v1": "bpfarm-agent", "bpfarm@sha256:abcd": "bpfarm",
		"quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z": "minio"} {
		if got := ImageName(in); got != want {
			t.Errorf("ImageName(%q) = %q, want %q", in, got, want)
		}
	}
}
