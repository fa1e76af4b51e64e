// Package auth issues and checks bpfarm's API tokens.
//
// A token is a random secret "bpfarm_<base64url>" shown once; the server
// stores only its SHA-256. Each token has a role: admin (tokens, kernels,
// everything), publisher (push), reader (fetch) or host (an agent's token,
// bound to one host name: it reads what a reader reads, and registers,
// polls, reports and uploads BTF as that host only).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/store"
)

// Prefix starts every token secret, so that leaked tokens are easy to scan for.
const Prefix = "bpfarm_"

// NewSecret returns a new random token secret.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token secret: %w", err)
	}
	return Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash returns the hex SHA-256 under which a secret is stored. Secrets have
// 256 bits of entropy, so a fast hash is enough.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// rank orders the roles by what they may read and write; a host token
// reads what a reader reads (its host-only rights are checked by
// ActsAsHost), and no rank needs the host role.
var rank = map[string]int{api.RoleHost: 1, api.RoleReader: 1, api.RolePublisher: 2, api.RoleAdmin: 3}

// ValidRole reports whether role is one of the known roles.
func ValidRole(role string) bool { return rank[role] > 0 }

// Allows reports whether a token of role have may do what needs role want.
// Nothing is allowed by wanting the host role: use ActsAsHost.
func Allows(have, want string) bool {
	return want != api.RoleHost && rank[have] >= rank[want] && rank[want] > 0
}

// ActsAsHost reports whether p may act as host name: register, poll,
// report and upload BTF for it. Only a host token bound to name may.
func (p Principal) ActsAsHost(name string) bool {
	return p.Role == api.RoleHost && !p.Anonymous && p.Host != "" && p.Host == name
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// ValidName checks a token name.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("token name %q: use 1-64 letters, digits, '_', '.', '@' or '-'", name)
	}
	return nil
}

// Principal is who made a request.
type Principal struct {
	Name      string
	Role      string
	Anonymous bool
	// Host is the host name a host token is bound to.
	Host string
	// TokenID is the token's row id (0 when anonymous).
	TokenID int64
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the request's principal; the zero Principal (no
// role) when the request carried no valid token.
func FromContext(ctx context.Context) Principal {
	p, _ := ctx.Value(ctxKey{}).(Principal)
	return p
}

// ErrUnknownToken is returned for a token that does not exist or was revoked.
var ErrUnknownToken = errors.New("unknown or revoked token")

// Tokens finds live tokens by the hash of their secret (store.DB does).
type Tokens interface {
	TokenByHash(ctx context.Context, hash string) (api.Token, error)
}

// Authenticate resolves a token's secret to the principal it names: the
// one check of a secret, for the API's bearer tokens and the UI's sign-in
// alike. A secret no live token has is ErrUnknownToken; any other error
// is the store's.
func Authenticate(ctx context.Context, tokens Tokens, secret string) (Principal, error) {
	tok, err := tokens.TokenByHash(ctx, Hash(secret))
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrUnknownToken
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up token: %w", err)
	}
	return Principal{Name: tok.Name, Role: tok.Role, Host: tok.Host, TokenID: tok.ID}, nil
}

// BearerToken extracts the token from an "Authorization: Bearer T" header.
// ok is false when the header is absent; an error reports a malformed one.
func BearerToken(r *http.Request) (secret string, ok bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, nil
	}
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false, errors.New(`malformed Authorization header: want "Bearer <token>"`)
	}
	return strings.TrimSpace(tok), true, nil
}
