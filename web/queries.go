package web

// The overviews pages show, read through the store's overview methods
// (server/store/overview.go), which answer at archive scale in a round
// trip or a few; and how the pages read the relocation reports.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bpfarm/bpfarm/manifest"
	"github.com/bpfarm/bpfarm/server/store"
)

// Tally counts artifacts by outcome.
type Tally = store.Tally

// programRow is one line of the programs page.
type programRow = store.ProgramSummary

// matrixKernel is a kernel row of the coverage matrix.
type matrixKernel = store.KernelName

// kernelProgram is a program's latest revision relocated for one kernel.
type kernelProgram = store.KernelArtifact

// verifyRow is an artifact's verification on its real kernel.
type verifyRow = store.ArtifactVerification

// cellReport is the relocation report as the matrix reads it. It is
// lenient: fields the report may grow (a per-program "verified" verdict
// from booting the kernel) are read when present.
type cellReport struct {
	Programs []struct {
		manifest.ProgramReport
		Verified *manifest.Verification `json:"verified,omitempty"`
	} `json:"programs"`
	Verified map[string]manifest.Verification `json:"verified,omitempty"`
}

// revisionArtifact is one artifact of a revision, for the matrix.
type revisionArtifact struct {
	store.RevisionArtifact
	Report *cellReport // nil when there is none
}

// verdicts sums up each program's verdicts over its load modes: accepted
// only when every mode was.
func verdicts(v *verifyRow) map[string]*manifest.Verification {
	if v == nil || v.State != "done" || (v.Result != "verified" && v.Result != "rejected") {
		return nil
	}
	out := map[string]*manifest.Verification{}
	for _, p := range v.Programs {
		cur, ok := out[p.Program]
		if !ok {
			cur = &manifest.Verification{Accepted: true}
			out[p.Program] = cur
		}
		cur.Instructions = max(cur.Instructions, p.Instructions)
		if !p.Accepted {
			cur.Accepted = false
			if cur.Error == "" {
				cur.Error = p.Error
				if p.Mode != "" {
					cur.Error = p.Mode + ": " + p.Error
				}
			}
		}
	}
	return out
}

// revisionArtifacts lists the artifacts of a revision's builds with their
// reports read.
func (u *UI) revisionArtifacts(ctx context.Context, revisionID int64) ([]revisionArtifact, error) {
	as, err := u.cfg.DB.RevisionArtifacts(ctx, revisionID)
	if err != nil {
		return nil, err
	}
	out := make([]revisionArtifact, len(as))
	for i, a := range as {
		out[i].RevisionArtifact = a
		if len(a.Report) > 0 {
			out[i].Report = new(cellReport)
			if err := json.Unmarshal(a.Report, out[i].Report); err != nil {
				return nil, fmt.Errorf("artifact %d report: %w", a.ID, err)
			}
		}
	}
	return out, nil
}

// queueingGrace is how long after a build succeeds a page waits for its
// relocations to be queued.
const queueingGrace = 30 * time.Second

// kernelRow is one line of the kernels page.
type kernelRow struct {
	store.Kernel
	Modules int
	Tally
}

// kernelOverview lists the archive's kernels with the outcome of the
// artifacts of every program's latest revision for each.
func (u *UI) kernelOverview(ctx context.Context) ([]kernelRow, error) {
	ks, err := u.cfg.DB.Kernels(ctx, "")
	if err != nil {
		return nil, err
	}
	tallies, err := u.cfg.DB.LatestTallyByKernel(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]kernelRow, len(ks))
	for i, k := range ks {
		out[i] = kernelRow{Kernel: k, Modules: k.ModulesCount, Tally: tallies[k.ID]}
	}
	return out, nil
}
