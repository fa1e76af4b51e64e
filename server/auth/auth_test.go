package auth_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/store"
	"github.com/bpfarm/bpfarm/server/store/storetest"
)

// TestAuthenticate: a live token's secret names its principal; an unknown
// or revoked one is ErrUnknownToken; a store that fails is not mistaken
// for an unknown token.
func TestAuthenticate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		secret, err := auth.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		tok, err := db.CreateToken(ctx, "alice", api.RolePublisher, auth.Hash(secret))
		if err != nil {
			t.Fatal(err)
		}
		p, err := auth.Authenticate(ctx, db, secret)
		if err != nil || p != (auth.Principal{Name: "alice", Role: api.RolePublisher, TokenID: tok.ID}) {
			t.Fatalf("alice: %+v %v", p, err)
		}
		hostSecret, _ := auth.NewSecret()
		if _, _, err := db.EnrollHost(ctx, "web-1", nil, "host:web-1", auth.Hash(hostSecret)); err != nil {
			t.Fatal(err)
		}
		if p, err := auth.Authenticate(ctx, db, hostSecret); err != nil || p.Role != api.RoleHost || p.Host != "web-1" {
			t.Fatalf("host token: %+v %v", p, err)
		}
		other, _ := auth.NewSecret()
		if _, err := auth.Authenticate(ctx, db, other); !errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("unknown secret: %v", err)
		}
		if err := db.RevokeToken(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.Authenticate(ctx, db, secret); !errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("revoked: %v", err)
		}
		db.Close()
		if _, err := auth.Authenticate(ctx, db, hostSecret); err == nil || errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("closed store: %v", err)
		}
	})
}
