package fault

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err   error
		kind  Kind
		cause string
	}{
		{errors.New("t.bpf.c:3: error: unknown type"), User, ""},
		{&fs.PathError{Op: "write", Path: "/data/x", Err: syscall.ENOSPC}, Infra, "no space left on the data volume"},
		{fmt.Errorf("store object: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT}), Infra, "no space left on the data volume"},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), Infra, "storage deadline exceeded"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, Infra, "object storage unreachable"},
		{Wrap(ErrStorageUnavailable, errors.New("503 from s3")), Infra, "object storage unreachable"},
		{Wrap(ErrInternal, errors.New("nil pointer")), Infra, "internal error"},
		{fmt.Errorf("compile: %w", infraErr{errors.New("bwrap: setting up uid map")}), Infra, "internal error"},
		{fmt.Errorf("compile: %w", infraErr{fmt.Errorf("clang: %w", syscall.ENOSPC)}), Infra, "no space left on the data volume"},
	} {
		if got := Classify(tc.err); got != tc.kind {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.kind)
		}
		if got := Cause(tc.err); got != tc.cause {
			t.Errorf("Cause(%v) = %q, want %q", tc.err, got, tc.cause)
		}
	}
}

func TestWrap(t *testing.T) {
	if Wrap(ErrNoSpace, nil) != nil {
		t.Fatal("Wrap(nil) is not nil")
	}
	base := &fs.PathError{Op: "write", Path: "p", Err: syscall.ENOSPC}
	w := Wrap(ErrStorageUnavailable, base)
	if w != error(base) {
		t.Fatalf("Wrap re-wrapped an already classified error: %v", w)
	}
	inner := errors.New("connection reset")
	w = Wrap(ErrStorageUnavailable, inner)
	if !errors.Is(w, inner) || !errors.Is(w, ErrStorageUnavailable) {
		t.Fatalf("Wrap lost a chain: %v", w)
	}
	if w.Error() != "object storage unreachable: connection reset" {
		t.Fatalf("Wrap text = %q", w.Error())
	}
}

// infraErr is an error of another package that marks itself as the farm's.
type infraErr struct{ err error }

func (e infraErr) Error() string { return e.err.Error() }
func (e infraErr) Unwrap() error { return e.err }
func (e infraErr) Infra() bool   { return true }

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("bad source"), false},
		{Wrap(ErrInternal, errors.New("bug")), false},
		{infraErr{errors.New("sandbox")}, false},
		{Wrap(ErrStorageUnavailable, errors.New("503")), true},
		{&fs.PathError{Op: "write", Path: "p", Err: syscall.ENOSPC}, true},
		{Wrap(ErrDatabaseUnavailable, errors.New("down")), true},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
