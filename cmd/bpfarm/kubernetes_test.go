package main

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/bpfarm/bpfarm/internal/deploytest"
	"github.com/bpfarm/bpfarm/server/httpapi"
)

// TestKubernetesServer checks the api and worker containers of
// deploy/kubernetes against `bpfarm serve`: every argument and every
// BPFARM_* variable is a flag it accepts with a value it accepts, the
// container port is the --addr port, the probes ask routes the role
// serves, and the files the flags name are mounted.
func TestKubernetesServer(t *testing.T) {
	tree, err := deploytest.Load("../../deploy/kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, w := range tree.Containers() {
		if w.Object.Name() != "bpfarm-api" && w.Object.Name() != "bpfarm-worker" {
			continue
		}
		checked++
		c := w.Container
		where := w.Object.File + ": " + c.Name
		if !w.Object.Patch || c.Image != "" {
			if got := deploytest.ImageName(c.Image); got != "bpfarm" {
				t.Errorf("%s: image %s, want bpfarm (the server)", where, c.Image)
			}
		}
		if len(c.Args) == 0 || c.Args[0] != "serve" {
			t.Errorf("%s: args %q: want serve first", where, c.Args)
			continue
		}
		cmd := newServe()
		if err := cmd.ParseFlags(c.Args[1:]); err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if rest := cmd.Flags().Args(); len(rest) > 0 {
			t.Errorf("%s: arguments %q are not flags", where, rest)
		}
		flag := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
		role := strings.TrimPrefix(w.Object.Name(), "bpfarm-")
		if flag("role") != role {
			t.Errorf("%s: --role %s, want %s", where, flag("role"), role)
		}
		// The environment: BPFARM_<FLAG> of real flags, with values they take.
		setEnv := func(name, value string, literal bool) {
			if !strings.HasPrefix(name, "BPFARM_") {
				t.Errorf("%s: variable %s is not a flag's (BPFARM_<FLAG>)", where, name)
				return
			}
			fname := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "BPFARM_"), "_", "-"))
			f := newServe().Flags().Lookup(fname)
			if f == nil {
				t.Errorf("%s: %s: bpfarm serve has no flag --%s", where, name, fname)
				return
			}
			if literal {
				if err := f.Value.Set(value); err != nil {
					t.Errorf("%s: %s=%q: %v", where, name, value, err)
				}
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				t.Errorf("%s: envFrom other than a ConfigMap", where)
				continue
			}
			data, ok := tree.ConfigMapData(ef.ConfigMapRef.Name)
			if !ok {
				t.Errorf("%s: no ConfigMap %s", where, ef.ConfigMapRef.Name)
			}
			for k, v := range data {
				setEnv(k, v, true)
			}
		}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				setEnv(e.Name, e.Value, true)
			case e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				data, ok := tree.SecretData(ref.Name)
				if _, has := data[ref.Key]; !ok || !has {
					t.Errorf("%s: %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
				}
				setEnv(e.Name, data[ref.Key], true)
			default:
				t.Errorf("%s: %s: only literal values and Secret keys", where, e.Name)
			}
		}
		if w.Object.Patch {
			continue // the rest is the resource's
		}
		// Ports and probes.
		_, port, err := net.SplitHostPort(flag("addr"))
		if err != nil {
			t.Errorf("%s: --addr %q: %v", where, flag("addr"), err)
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
			if strconv.Itoa(int(p.ContainerPort)) != port {
				t.Errorf("%s: container port %s %d, but --addr %s", where, p.Name, p.ContainerPort, flag("addr"))
			}
		}
		api := httpapi.New(httpapi.Config{Registry: prometheus.NewRegistry(), HealthOnly: role == "worker"})
		probes := 0
		for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s: no %s HTTP probe", where, what)
				continue
			}
			probes++
			if !api.Router().Match(chi.NewRouteContext(), "GET", p.HTTPGet.Path) {
				t.Errorf("%s: %s probe GET %s: no such route on a %s", where, what, p.HTTPGet.Path, role)
			}
			if _, ok := ports[p.HTTPGet.Port.String()]; !ok && p.HTTPGet.Port.String() != port {
				t.Errorf("%s: %s probe port %s is no container port", where, what, p.HTTPGet.Port.String())
			}
		}
		if probes != 2 {
			continue
		}
		// What the flags name is mounted: the data directory (the root
		// file system is read-only) and the secret key file.
		if v, _, ok := deploytest.MountFor(w.Pod, c, flag("data")); !ok || v.EmptyDir == nil {
			t.Errorf("%s: --data %s is not on a mounted emptyDir", where, flag("data"))
		}
		v, inside, ok := deploytest.MountFor(w.Pod, c, flag("secret-key-file"))
		if !ok || v.Secret == nil {
			t.Errorf("%s: --secret-key-file %s is not on a mounted Secret", where, flag("secret-key-file"))
			continue
		}
		key := inside
		for _, it := range v.Secret.Items {
			if it.Path == inside {
				key = it.Key
			}
		}
		if data, _ := tree.SecretData(v.Secret.SecretName); data[key] == "" {
			t.Errorf("%s: --secret-key-file: Secret %s has no key %s", where, v.Secret.SecretName, key)
		}
	}
	if checked < 3 {
		t.Fatalf("only %d bpfarm serve containers found", checked)
	}
}
