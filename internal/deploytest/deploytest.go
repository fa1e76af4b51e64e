// Package deploytest reads the Kubernetes manifests under deploy/kubernetes
// the way kustomize finds them, strictly, for tests: every kustomization
// decodes into Kustomization with no unknown field, every file it lists
// exists and every YAML file beside it is listed, and every manifest and
// patch decodes into the k8s.io/api type of its kind with no unknown
// field. No cluster is needed.
package deploytest

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Kustomization is the part of kustomize's kustomization.yaml (and of a
// Component) these manifests use; any other field is an error.
type Kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Labels     []Label  `json:"labels,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Patches    []Patch  `json:"patches,omitempty"`
	Images     []Image  `json:"images,omitempty"`
}

// Label is an entry of a kustomization's labels.
type Label struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
}

// Patch is a patch file of a kustomization (strategic merge).
type Patch struct {
	Path string `json:"path"`
}

// Image rewrites the images of a name.
type Image struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// Object is one manifest document, decoded.
type Object struct {
	// File is the document's file, relative to the tree's root; Dir the
	// kustomization that lists it.
	File, Dir string
	// Patch is set for a patch (a partial object).
	Patch bool
	Kind  string
	// Value is a pointer to the k8s.io/api type of Kind.
	Value any
}

// Tree is every kustomization under a root and what they list.
type Tree struct {
	Root string
	// Kustomizations by directory, relative to Root.
	Kustomizations map[string]*Kustomization
	Objects        []Object
}

// kinds maps apiVersion/kind to a new value of its type.
var kinds = map[string]func() any{
	"v1/Namespace":       func() any { return new(corev1.Namespace) },
	"v1/ConfigMap":       func() any { return new(corev1.ConfigMap) },
	"v1/Secret":          func() any { return new(corev1.Secret) },
	"v1/Service":         func() any { return new(corev1.Service) },
	"apps/v1/Deployment": func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet": func() any {
		return new(appsv1.StatefulSet)
	},
	"apps/v1/DaemonSet": func() any { return new(appsv1.DaemonSet) },
}

var kustomizationKinds = map[string]string{
	"kustomize.config.k8s.io/v1beta1/Kustomization": "Kustomization",
	"kustomize.config.k8s.io/v1alpha1/Component":    "Component",
}

// Load reads every kustomization under root.
func Load(root string) (*Tree, error) {
	t := &Tree{Root: root, Kustomizations: map[string]*Kustomization{}}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		return t.loadKustomization(rel)
	})
	if err != nil {
		return nil, err
	}
	if len(t.Kustomizations) == 0 {
		return nil, fmt.Errorf("no kustomization.yaml under %s", root)
	}
	return t, nil
}

func (t *Tree) loadKustomization(dir string) error {
	path := filepath.Join(t.Root, dir, "kustomization.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	k := new(Kustomization)
	if err := yaml.UnmarshalStrict(b, k); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	want, ok := kustomizationKinds[k.APIVersion+"/"+k.Kind]
	if !ok {
		return fmt.Errorf("%s: apiVersion %q kind %q: not a kustomization or component", path, k.APIVersion, k.Kind)
	}
	if want == "Component" && (len(k.Resources) > 0 || k.Namespace != "") {
		return fmt.Errorf("%s: this component may only patch", path)
	}
	t.Kustomizations[dir] = k
	used := map[string]bool{"kustomization.yaml": true}
	for _, r := range k.Resources {
		if err := t.resource(dir, r, false, used); err != nil {
			return fmt.Errorf("%s: resource %s: %w", path, r, err)
		}
	}
	for _, p := range k.Patches {
		if err := t.resource(dir, p.Path, true, used); err != nil {
			return fmt.Errorf("%s: patch %s: %w", path, p.Path, err)
		}
	}
	for _, c := range k.Components {
		if err := t.subdir(dir, c, "Component"); err != nil {
			return fmt.Errorf("%s: component %s: %w", path, c, err)
		}
	}
	// Every YAML file of the directory is listed.
	entries, err := os.ReadDir(filepath.Join(t.Root, dir))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) && !used[e.Name()] {
			return fmt.Errorf("%s: %s is not listed (resources, patches)", path, filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// subdir checks that ref, relative to dir, is a directory under the root
// holding a kustomization of kind.
func (t *Tree) subdir(dir, ref, kind string) error {
	sub := filepath.Clean(filepath.Join(dir, ref))
	if sub == ".." || strings.HasPrefix(sub, ".."+string(filepath.Separator)) {
		return fmt.Errorf("outside %s", t.Root)
	}
	b, err := os.ReadFile(filepath.Join(t.Root, sub, "kustomization.yaml"))
	if err != nil {
		return err
	}
	var k Kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		return err
	}
	if kustomizationKinds[k.APIVersion+"/"+k.Kind] != kind {
		return fmt.Errorf("%s is a %s, want a %s", sub, k.Kind, kind)
	}
	return nil
}

func (t *Tree) resource(dir, ref string, patch bool, used map[string]bool) error {
	if ref == "" || filepath.IsAbs(ref) || strings.Contains(ref, "://") {
		return fmt.Errorf("want a path relative to the kustomization")
	}
	full := filepath.Join(t.Root, dir, ref)
	fi, err := os.Stat(full)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if patch {
			return fmt.Errorf("a patch is a file")
		}
		return t.subdir(dir, ref, "Kustomization")
	}
	if filepath.Dir(filepath.Clean(ref)) != "." {
		return fmt.Errorf("a file of another directory: list its kustomization instead")
	}
	used[filepath.Base(ref)] = true
	b, err := os.ReadFile(full)
	if err != nil {
		return err
	}
	file := filepath.Join(dir, ref)
	for i, doc := range splitDocuments(b) {
		o, err := decode(doc)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		o.File, o.Dir, o.Patch = file, dir, patch
		t.Objects = append(t.Objects, o)
	}
	return nil
}

var separator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocuments splits a YAML stream into its non-empty documents.
func splitDocuments(b []byte) [][]byte {
	var out [][]byte
	for _, d := range separator.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// decode decodes one document strictly into the type of its kind.
func decode(doc []byte) (Object, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return Object{}, err
	}
	mk, ok := kinds[meta.APIVersion+"/"+meta.Kind]
	if !ok {
		return Object{}, fmt.Errorf("apiVersion %q kind %q: not a kind these manifests use", meta.APIVersion, meta.Kind)
	}
	v := mk()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return Object{}, fmt.Errorf("%s: %w", meta.Kind, err)
	}
	return Object{Kind: meta.Kind, Value: v}, nil
}

// PodTemplate returns the pod template of a Deployment, StatefulSet or
// DaemonSet, and false for other kinds.
func (o Object) PodTemplate() (*corev1.PodTemplateSpec, bool) {
	switch v := o.Value.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template, true
	case *appsv1.StatefulSet:
		return &v.Spec.Template, true
	case *appsv1.DaemonSet:
		return &v.Spec.Template, true
	}
	return nil, false
}

// Name returns the object's metadata name.
func (o Object) Name() string {
	type named interface{ GetName() string }
	if n, ok := o.Value.(named); ok {
		return n.GetName()
	}
	return ""
}

// Workload is a container of a workload's pod template.
type Workload struct {
	Object    Object
	Pod       *corev1.PodSpec
	Container *corev1.Container
}

// Containers returns every container of every workload (resources and
// patches), with its pod.
func (t *Tree) Containers() []Workload {
	var out []Workload
	for _, o := range t.Objects {
		tpl, ok := o.PodTemplate()
		if !ok {
			continue
		}
		for i := range tpl.Spec.Containers {
			out = append(out, Workload{Object: o, Pod: &tpl.Spec, Container: &tpl.Spec.Containers[i]})
		}
	}
	return out
}

// Find returns the resources (not patches) of kind and name.
func (t *Tree) Find(kind, name string) []Object {
	var out []Object
	for _, o := range t.Objects {
		if !o.Patch && o.Kind == kind && o.Name() == name {
			out = append(out, o)
		}
	}
	return out
}

// ConfigMapData returns the data of the ConfigMap name: its resource, with
// any patch of it applied key by key.
func (t *Tree) ConfigMapData(name string) (map[string]string, bool) {
	return t.data("ConfigMap", name, func(v any) map[string]string { return v.(*corev1.ConfigMap).Data })
}

// SecretData returns the stringData and data keys of the Secret name,
// patches applied key by key.
func (t *Tree) SecretData(name string) (map[string]string, bool) {
	return t.data("Secret", name, func(v any) map[string]string {
		s := v.(*corev1.Secret)
		m := map[string]string{}
		for k, b := range s.Data {
			m[k] = string(b)
		}
		for k, v := range s.StringData {
			m[k] = v
		}
		return m
	})
}

func (t *Tree) data(kind, name string, get func(any) map[string]string) (map[string]string, bool) {
	var (
		out   map[string]string
		found bool
	)
	for _, o := range t.Objects {
		if o.Kind != kind || o.Name() != name {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		found = found || !o.Patch
		for k, v := range get(o.Value) {
			out[k] = v
		}
	}
	return out, found
}

// MountFor returns the volume mounted at the directory holding path in c
// (the longest mount path that is a parent of path) and the path inside
// that volume.
func MountFor(pod *corev1.PodSpec, c *corev1.Container, path string) (*corev1.Volume, string, bool) {
	var (
		best *corev1.VolumeMount
	)
	for i, m := range c.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		return nil, "", false
	}
	for i, v := range pod.Volumes {
		if v.Name == best.Name {
			return &pod.Volumes[i], strings.TrimPrefix(strings.TrimPrefix(path, strings.TrimSuffix(best.MountPath, "/")), "/"), true
		}
	}
	return nil, "", false
}

// DockerTargets reads a Dockerfile's build stages and the image names its
// header comment tags them with ("docker build --target T -t NAME"):
// image name → target.
func DockerTargets(dockerfile string) (images map[string]string, stages []string, err error) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		return nil, nil, err
	}
	images = map[string]string{}
	from := regexp.MustCompile(`(?i)^FROM\s+\S+\s+AS\s+(\S+)\s*$`)
	tag := regexp.MustCompile(`docker build --target (\S+)\s+-t (\S+)`)
	for _, l := range bytes.Split(b, []byte("\n")) {
		if m := from.FindSubmatch(l); m != nil {
			stages = append(stages, string(m[1]))
		}
		if m := tag.FindSubmatch(l); m != nil && bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			images[string(m[2])] = string(m[1])
		}
	}
	for name, target := range images {
		if !slices.Contains(stages, target) {
			return nil, nil, fmt.Errorf("%s: image %s names target %s, which is no stage", dockerfile, name, target)
		}
	}
	return images, stages, nil
}

// ImageName strips an image reference's registry, tag and digest:
// "registry.example/team/bpfarm:1.2" → "bpfarm".
func ImageName(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref[strings.LastIndex(ref, "/")+1:]
}
