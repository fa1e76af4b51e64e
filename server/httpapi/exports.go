package httpapi

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc/inspect"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/store"
)

// checkExports refuses exports of maps the program does not have: it checks
// them against the newest succeeded build of the pinned revision (else of
// any revision). With no succeeded build yet there is nothing to check
// against, and the hosts report what they cannot export.
func (s *Server) checkExports(ctx context.Context, req api.AssignmentRequest) error {
	if len(req.Exports) == 0 {
		return nil
	}
	f := store.BuildFilter{Program: req.Program, State: api.StateSucceeded, Limit: 1}
	if req.Revision != "" {
		digest, _, _, err := s.cfg.DB.RevisionBlob(ctx, req.Program, req.Revision)
		if err != nil {
			return err // the store names what is wrong; AddAssignment would refuse it too
		}
		f.Revision = digest
	}
	bs, err := s.cfg.DB.Builds(ctx, f)
	if err != nil || len(bs) == 0 || bs[0].Inspection == nil {
		return err
	}
	b := bs[0]
	for _, e := range req.Exports {
		i := slices.IndexFunc(b.Inspection.Maps, func(m inspect.Map) bool { return m.Name == e.Map })
		if i < 0 {
			names := make([]string, 0, len(b.Inspection.Maps))
			for _, m := range b.Inspection.Maps {
				names = append(names, m.Name)
			}
			return &build.InputError{Err: fmt.Errorf("export %s: build #%d of %s (revision %s) has no map %s; its maps: %s",
				e, b.ID, req.Program, shortDigest(b.Revision), e.Map, strings.Join(names, ", "))}
		}
	}
	return nil
}

// validExportStatuses checks the export statuses of a host report.
func validExportStatuses(es []api.ExportStatus) error {
	if len(es) > 64 {
		return fmt.Errorf("%d exports: at most 64", len(es))
	}
	for _, e := range es {
		if err := (api.Export{Map: e.Map, Kind: e.Kind}).Validate(); err != nil {
			return err
		}
		if len(e.Metrics) > 256 || len(e.Labels) > 64 {
			return fmt.Errorf("export %s: too many metrics or labels", e.Map)
		}
	}
	return nil
}

func shortDigest(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
