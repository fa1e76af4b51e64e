// Package gc is bpfarm's garbage collection: it deletes the revisions of
// every program beyond the kept count (with their builds and artifacts),
// then the blobs no row names.
//
// Rows go first, in one transaction, and blobs only after it committed, so
// that a crash at any point leaves no row naming a missing blob: at worst
// unnamed blobs, which the next run deletes. A blob is deleted only when it
// is older than a grace period (a push writes its blobs before the rows
// that name them) and no row names it when it is deleted.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/lease"
	"github.com/bpfarm/bpfarm/server/quota"
	"github.com/bpfarm/bpfarm/server/store"
)

// DefaultGrace is how old an unnamed blob must be to be deleted.
const DefaultGrace = time.Hour

// Steps a Hook is called at.
const (
	StepRowsDeleted = "rows-deleted" // inside the transaction, before it commits
	StepCommitted   = "committed"    // after the transaction committed
	StepDeleteBlob  = "delete-blob"  // before each blob is deleted
	StepBlobDeleted = "blob-deleted" // after each blob was deleted
)

// Collector runs garbage collections; one at a time.
type Collector struct {
	DB     *store.DB
	Blobs  blob.Store
	Quotas *quota.Service
	// Grace is how old an unnamed blob must be to be deleted (default
	// DefaultGrace; tests set it to a negative value for "any age").
	Grace time.Duration
	Log   *slog.Logger
	// Hook, when set, is called at each step; an error stops the run
	// there, as a crash would (tests).
	Hook func(step string) error

	mu sync.Mutex
}

func (c *Collector) hook(step string) error {
	if c.Hook == nil {
		return nil
	}
	return c.Hook(step)
}

// Run collects garbage, or with dryRun only counts what it would delete.
// A collection runs in one process at a time among those sharing the
// database: while another holds the lease "gc", Run fails with
// lease.ErrHeld (dry runs, which delete nothing, need no lease).
func (c *Collector) Run(ctx context.Context, dryRun bool) (api.GCReport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if dryRun {
		return c.run(ctx, true)
	}
	var rep api.GCReport
	err := lease.Do(ctx, c.DB, "gc", lease.DefaultTTL, func(ctx context.Context) error {
		var err error
		rep, err = c.run(ctx, false)
		return err
	})
	return rep, err
}

func (c *Collector) run(ctx context.Context, dryRun bool) (api.GCReport, error) {
	rep := api.GCReport{DryRun: dryRun}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	protected, err := c.DB.InUseRevisions(ctx)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	keep := func(token string) int64 {
		if c.Quotas == nil {
			return quota.Defaults.MaxRevisions
		}
		n, _ := c.Quotas.KeepRevisions(ctx, token)
		return n
	}
	res, err := c.DB.CollectRevisions(ctx, store.RevisionGC{Keep: keep, Protected: protected, DryRun: dryRun,
		Hook: func() error { return c.hook(StepRowsDeleted) }})
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	rep.Revisions, rep.Builds, rep.Artifacts = res.Revisions, res.Builds, res.Artifacts
	if err := c.hook(StepCommitted); err != nil {
		return rep, err
	}
	refs, err := c.DB.BlobRefSet(ctx)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	grace := c.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	cutoff := time.Now().Add(-grace)
	var unnamed []blob.Entry
	err = c.Blobs.List(ctx, func(e blob.Entry) error {
		if !refs[e.Digest.String()] && e.ModTime.Before(cutoff) {
			unnamed = append(unnamed, e)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	if dryRun {
		// Revisions a real run deletes free their blobs too; a dry run
		// counts only the blobs no row names now.
		for _, e := range unnamed {
			rep.Blobs++
			rep.Bytes += e.Size
		}
		return rep, nil
	}
	for _, e := range unnamed {
		// A row may have come to name it since the listing.
		named, err := c.DB.BlobReferenced(ctx, e.Digest.String())
		if err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
		if named {
			continue
		}
		if err := c.hook(StepDeleteBlob); err != nil {
			return rep, err
		}
		if err := c.Blobs.Delete(ctx, e.Digest); err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
		rep.Blobs++
		rep.Bytes += e.Size
		if err := c.hook(StepBlobDeleted); err != nil {
			return rep, err
		}
	}
	log.Info("gc done", "revisions", rep.Revisions, "builds", rep.Builds, "artifacts", rep.Artifacts,
		"blobs", rep.Blobs, "bytes", rep.Bytes)
	return rep, nil
}

// Every runs a collection about once per interval across every process
// sharing the database (see lease.Every), until ctx is done, logging
// failures.
func (c *Collector) Every(ctx context.Context, interval time.Duration) {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	lease.Every(ctx, c.DB, log, "gc", interval, func(ctx context.Context) {
		_, err := c.Run(ctx, false)
		switch {
		case errors.Is(err, lease.ErrHeld):
			log.Info("periodic gc skipped: a collection runs in another process")
		case err != nil && !errors.Is(err, context.Canceled):
			log.Error("periodic gc", "err", err)
		}
	})
}
