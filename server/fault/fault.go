// Package fault classifies failures as the user's (the input is wrong, and
// trying again gives the same answer) or the infrastructure's (storage,
// disk, a deadline, an internal error: trying again later may succeed).
//
// Infrastructure faults are retried and never cached; they reach clients
// as 503 Service Unavailable with the cause line of the sentinel they wrap,
// such as "object storage unreachable".
package fault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Kind is who a failure is attributed to.
type Kind string

const (
	// User failures come from the input: bad source, a refused program.
	User Kind = "user"
	// Infra failures come from the farm: storage, disk, deadlines, bugs.
	Infra Kind = "infra"
)

// Sentinels for infrastructure faults. Their text is the one line a client
// sees; wrap them (with Wrap) around the underlying error.
var (
	// ErrStorageUnavailable: the blob store does not answer or refuses.
	ErrStorageUnavailable = errors.New("object storage unreachable")
	// ErrNoSpace: a volume the farm writes to is full.
	ErrNoSpace = errors.New("no space left on the data volume")
	// ErrDatabaseUnavailable: the metadata database does not answer.
	ErrDatabaseUnavailable = errors.New("database unreachable")
	// ErrDeadline: a storage call ran past its deadline.
	ErrDeadline = errors.New("storage deadline exceeded")
	// ErrInternal: a bug or an unexpected condition inside the farm.
	ErrInternal = errors.New("internal error")
)

var sentinels = []error{ErrNoSpace, ErrDeadline, ErrStorageUnavailable, ErrDatabaseUnavailable, ErrInternal}

// wrapped carries a sentinel and the error it classifies.
type wrapped struct {
	sentinel, err error
}

func (w *wrapped) Error() string   { return fmt.Sprintf("%v: %v", w.sentinel, w.err) }
func (w *wrapped) Unwrap() []error { return []error{w.sentinel, w.err} }

// Wrap marks err as the infrastructure fault sentinel. It returns nil for a
// nil err, and err itself when it already carries a sentinel.
func Wrap(sentinel, err error) error {
	if err == nil {
		return nil
	}
	if Sentinel(err) != nil {
		return err
	}
	return &wrapped{sentinel: sentinel, err: err}
}

// Sentinel returns the infrastructure sentinel err carries, classifying
// the system's own errors (ENOSPC and EDQUOT as ErrNoSpace, deadlines as
// ErrDeadline), or nil when err is not a recognised infrastructure fault.
func Sentinel(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ErrNoSpace
	case errors.Is(err, context.DeadlineExceeded):
		return ErrDeadline
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ErrStorageUnavailable
	}
	var inf infraError
	if errors.As(err, &inf) && inf.Infra() {
		return ErrInternal
	}
	return nil
}

// infraError is implemented by errors of packages below server/ that know
// a failure is not the user's without importing this package (a compile
// whose sandbox could not start, say): they report Infra() true, and are
// classified as ErrInternal unless their chain holds a more precise cause
// (ENOSPC, a deadline, a network error).
type infraError interface {
	error
	Infra() bool
}

// IsInfra reports whether err is an infrastructure fault.
func IsInfra(err error) bool { return Sentinel(err) != nil }

// Temporary reports whether err is an infrastructure fault expected to
// pass by itself once the infrastructure recovers (storage, disk space,
// the database, a deadline): every fault but ErrInternal. Clients get 503
// Service Unavailable for those, with the cause line.
func Temporary(err error) bool {
	s := Sentinel(err)
	return s != nil && s != ErrInternal
}

// Classify returns Infra for infrastructure faults and User otherwise.
// Callers classify only errors that can be the user's; an error of the
// farm's own making that is not recognised should be wrapped in
// ErrInternal first.
func Classify(err error) Kind {
	if IsInfra(err) {
		return Infra
	}
	return User
}

// Cause returns the one client-facing line for an infrastructure fault
// ("object storage unreachable"), or "" when err is not one.
func Cause(err error) string {
	if s := Sentinel(err); s != nil {
		return s.Error()
	}
	return ""
}
