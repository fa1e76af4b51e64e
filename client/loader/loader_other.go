//go:build !linux

package loader

import (
	"context"
	"errors"
)

// errNotLinux is returned by every operation on other systems.
var errNotLinux = errors.New("loader: BPF programs load on Linux only")

// Load is only supported on Linux.
func Load(ctx context.Context, a *Artifact, opt Options) (*Loaded, error) { return nil, errNotLinux }

// Unload is only supported on Linux.
func Unload(name string, opt Options) error { return errNotLinux }

// State is only supported on Linux.
func State(name string, opt Options) (*Loaded, error) { return nil, errNotLinux }

// Status is only supported on Linux.
func Status(opt Options) ([]Loaded, error) { return nil, errNotLinux }

// Adopt is only supported on Linux.
func Adopt(name string, opt Options) (*Loaded, error) { return nil, errNotLinux }

// Swap is only supported on Linux.
func Swap(ctx context.Context, old *Loaded, a *Artifact, opt Options) (*Loaded, error) {
	return nil, errNotLinux
}

// StatsEnabled is only supported on Linux.
func StatsEnabled() (bool, error) { return false, errNotLinux }
