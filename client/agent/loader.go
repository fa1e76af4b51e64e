package agent

import (
	"context"

	"github.com/bpfarm/bpfarm/client/loader"
)

// DefaultLoader is the real loader: package loader's functions.
type DefaultLoader struct{}

// Load calls loader.Load.
func (DefaultLoader) Load(ctx context.Context, a *loader.Artifact, opt loader.Options) (*loader.Loaded, error) {
	return loader.Load(ctx, a, opt)
}

// Swap calls loader.Swap.
func (DefaultLoader) Swap(ctx context.Context, old *loader.Loaded, a *loader.Artifact, opt loader.Options) (*loader.Loaded, error) {
	return loader.Swap(ctx, old, a, opt)
}

// Unload calls loader.Unload.
func (DefaultLoader) Unload(name string, opt loader.Options) error { return loader.Unload(name, opt) }

// Adopt calls loader.Adopt.
func (DefaultLoader) Adopt(name string, opt loader.Options) (*loader.Loaded, error) {
	return loader.Adopt(name, opt)
}

// Status calls loader.Status.
func (DefaultLoader) Status(opt loader.Options) ([]loader.Loaded, error) { return loader.Status(opt) }
