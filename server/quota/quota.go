// Package quota enforces per-token limits: bytes stored, revisions kept
// per program (enforced by garbage collection) and builds per hour. Each
// limit has a server-wide default that an admin can override per token.
package quota

import (
	"context"
	"fmt"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/store"
)

// Defaults are the limits of tokens without overrides.
var Defaults = api.Quota{MaxBytes: 1 << 30, MaxRevisions: 50, MaxBuildsPerHour: 200}

// Limit names, as in api.Quota's JSON and in refusals.
const (
	LimitBytes          = "max_bytes"
	LimitRevisions      = "max_revisions"
	LimitBuildsPerHour  = "max_builds_per_hour"
	LimitObjectSizeFlag = "--max-object-size"
)

// Error is a request refused because it would exceed a limit; Limit
// names it. It is a user error (a 4xx).
type Error struct {
	Token string
	Limit string
	Have  int64 // usage including the refused request
	Max   int64
}

func (e *Error) Error() string {
	switch e.Limit {
	case LimitBytes:
		return fmt.Sprintf("quota exceeded: token %q would store %d bytes, over its limit max_bytes=%d "+
			"(delete old revisions with bpfarm gc, or an admin raises it: bpfarm tokens quota %s --max-bytes N)",
			e.Token, e.Have, e.Max, e.Token)
	case LimitBuildsPerHour:
		return fmt.Sprintf("quota exceeded: token %q would queue %d builds in an hour, over its limit max_builds_per_hour=%d "+
			"(wait, or an admin raises it: bpfarm tokens quota %s --max-builds-per-hour N)", e.Token, e.Have, e.Max, e.Token)
	case LimitObjectSizeFlag:
		return fmt.Sprintf("object is %d bytes, over the server's limit --max-object-size=%d", e.Have, e.Max)
	}
	return fmt.Sprintf("quota exceeded: token %q: %s=%d (would be %d)", e.Token, e.Limit, e.Max, e.Have)
}

// Service computes limits and usage from the database.
type Service struct {
	db  *store.DB
	def api.Quota
}

// New returns a Service with the given defaults; zero fields take
// Defaults'.
func New(db *store.DB, def api.Quota) *Service {
	if def.MaxBytes <= 0 {
		def.MaxBytes = Defaults.MaxBytes
	}
	if def.MaxRevisions <= 0 {
		def.MaxRevisions = Defaults.MaxRevisions
	}
	if def.MaxBuildsPerHour <= 0 {
		def.MaxBuildsPerHour = Defaults.MaxBuildsPerHour
	}
	return &Service{db: db, def: def}
}

// Defaults returns the server's default limits.
func (s *Service) Defaults() api.Quota { return s.def }

// Of returns a token's effective limits, its overrides and its usage.
func (s *Service) Of(ctx context.Context, token string) (api.TokenQuota, error) {
	over, err := s.db.QuotaOverrides(ctx, token)
	if err != nil {
		return api.TokenQuota{}, err
	}
	q := api.TokenQuota{Token: token, Quota: effective(s.def, over), Overrides: over}
	if q.BytesUsed, err = s.db.BytesStored(ctx, token); err != nil {
		return q, err
	}
	if q.BuildsLastHour, err = s.db.BuildsSince(ctx, token, time.Now().Add(-time.Hour)); err != nil {
		return q, err
	}
	return q, nil
}

func effective(def, over api.Quota) api.Quota {
	if over.MaxBytes > 0 {
		def.MaxBytes = over.MaxBytes
	}
	if over.MaxRevisions > 0 {
		def.MaxRevisions = over.MaxRevisions
	}
	if over.MaxBuildsPerHour > 0 {
		def.MaxBuildsPerHour = over.MaxBuildsPerHour
	}
	return def
}

// CheckPush refuses a push by token that would store bytes more or queue
// builds more than its limits allow, with an *Error. Tokens that no longer
// exist (or anonymous pushes, which the API refuses anyway) have the
// defaults.
func (s *Service) CheckPush(ctx context.Context, token string, bytes int64, builds int) error {
	q, err := s.Of(ctx, token)
	if err != nil {
		return err
	}
	if n := q.BuildsLastHour + int64(builds); builds > 0 && n > q.MaxBuildsPerHour {
		return &Error{Token: token, Limit: LimitBuildsPerHour, Have: n, Max: q.MaxBuildsPerHour}
	}
	if n := q.BytesUsed + bytes; n > q.MaxBytes {
		return &Error{Token: token, Limit: LimitBytes, Have: n, Max: q.MaxBytes}
	}
	return nil
}

// CheckStore refuses storing bytes more for token, with an *Error.
func (s *Service) CheckStore(ctx context.Context, token string, bytes int64) error {
	return s.CheckPush(ctx, token, bytes, 0)
}

// KeepRevisions returns how many revisions of each program gc keeps for
// token's pushes.
func (s *Service) KeepRevisions(ctx context.Context, token string) (int64, error) {
	over, err := s.db.QuotaOverrides(ctx, token)
	if err != nil {
		return s.def.MaxRevisions, nil // a deleted token's revisions: the default
	}
	return effective(s.def, over).MaxRevisions, nil
}
