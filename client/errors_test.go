package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/bpfarm/bpfarm/manifest"
)

// TestErrorKinds checks the typed errors callers branch on, on the errors
// the client really returns: a refused connection, a server's answers and
// artifacts refused by verification.
func TestErrorKinds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c, err := New("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	_, refused := c.Programs(context.Background())
	if refused == nil {
		t.Fatal("no error from a closed port")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, cancelled := c.Programs(ctx)

	type kinds struct{ notFound, unauthorized, unavailable, signature, digest, wrong, transient bool }
	for _, tc := range []struct {
		name string
		err  error
		want kinds
	}{
		{"connection refused", refused, kinds{unavailable: true, transient: true}},
		{"cancelled", cancelled, kinds{}},
		{"404", fmt.Errorf("resolve: %w", &APIError{Status: 404, Message: "no artifact"}), kinds{notFound: true}},
		{"401", &APIError{Status: 401}, kinds{unauthorized: true}},
		{"403", &APIError{Status: 403}, kinds{unauthorized: true}},
		{"400", &APIError{Status: 400}, kinds{}},
		{"429", &APIError{Status: 429}, kinds{unavailable: true, transient: true}},
		{"503", &APIError{Status: 503, Message: "relocating"}, kinds{unavailable: true, transient: true}},
		{"bad signature", fmt.Errorf("artifact: %w", manifest.ErrBadSignature), kinds{signature: true}},
		{"unsigned", fmt.Errorf("artifact: %w", manifest.ErrUnsigned), kinds{signature: true}},
		{"digest", fmt.Errorf("artifact: %w", &manifest.FileError{Name: "p.bpf.o", What: "sha256", Got: "00", Wanted: "11"}),
			kinds{digest: true}},
		{"wrong artifact", &WrongArtifactError{Program: "a", What: "program", Asked: "a", Got: "b"}, kinds{wrong: true}},
		{"no key", ErrNoPublicKey, kinds{}},
		{"other", errors.New("something else"), kinds{}},
	} {
		got := kinds{errors.Is(tc.err, ErrNotFound), errors.Is(tc.err, ErrUnauthorized), errors.Is(tc.err, ErrUnavailable),
			errors.Is(tc.err, ErrSignature), errors.Is(tc.err, ErrDigestMismatch), errors.Is(tc.err, ErrWrongArtifact),
			IsTransient(tc.err)}
		if got != tc.want {
			t.Errorf("%s (%v): %+v, want %+v", tc.name, tc.err, got, tc.want)
		}
	}
}
