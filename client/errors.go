package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/bpfarm/bpfarm/manifest"
)

// Errors callers branch on. Test with errors.Is: every error of this
// package that means one of them wraps it (an *APIError matches by its
// status).
var (
	// ErrNotFound: the server has no such program, revision, kernel,
	// artifact, host or blob (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the token is missing, unknown or revoked, or its
	// role may not do this (HTTP 401, 403).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnavailable: the server could not be reached, or answered that
	// it cannot answer now (HTTP 5xx, 429, a relocation in progress).
	// Such a failure may pass: retrying later can succeed.
	ErrUnavailable = errors.New("server unavailable")
	// ErrSignature: an artifact's manifest is unsigned or its signature
	// does not verify against the pinned key.
	ErrSignature = manifest.ErrBadSignature
	// ErrDigestMismatch: a downloaded file's size or sha256 is not the
	// one its signed manifest records.
	ErrDigestMismatch = manifest.ErrDigestMismatch
	// ErrWrongArtifact: a validly signed artifact that is not the one
	// asked for (another program, revision, kernel or arch), or a
	// revision older than the newest already loaded. See *WrongArtifactError.
	ErrWrongArtifact = errors.New("wrong artifact")
	// ErrNotCached: offline (or with the server unavailable), the cache
	// holds no artifact of the program and revision asked for. It may
	// pass: IsTransient reports true.
	ErrNotCached = errors.New("not in the cache")
)

// APIError is a non-2xx answer from the server. It matches ErrNotFound,
// ErrUnauthorized or ErrUnavailable by its status.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Is makes errors.Is(err, ErrNotFound) and the like hold for an answer of
// that kind.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrUnavailable:
		return e.Status >= 500 || e.Status == http.StatusTooManyRequests
	}
	return false
}

// transportError is a request that got no answer (connection refused,
// reset, timed out, a body cut short). It matches ErrUnavailable.
type transportError struct{ err error }

func (e *transportError) Error() string        { return e.err.Error() }
func (e *transportError) Unwrap() error        { return e.err }
func (e *transportError) Is(target error) bool { return target == ErrUnavailable }

// unavailable wraps err as a failure to reach the server, unless the
// caller gave up (the context was cancelled).
func unavailable(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return &transportError{err: err}
}

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsTransient reports whether a failure may pass by itself: the server
// unreachable or busy. A refused artifact (signature, digest, wrong
// artifact), a missing one or a refused token is not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, ErrSignature) || errors.Is(err, manifest.ErrUnsigned) || errors.Is(err, ErrDigestMismatch) ||
		errors.Is(err, ErrWrongArtifact) || errors.Is(err, ErrNoPublicKey) || errors.Is(err, ErrNotVerified) {
		return false
	}
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotCached) || errors.Is(err, context.DeadlineExceeded)
}
