package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/store"
)

// Cookie names. The session cookie holds an opaque random id; the sign-in
// cookie holds the double-submit CSRF token of the sign-in form (there is
// no session yet to bind a token to).
const (
	sessionCookie = "bpfarm_session"
	signinCookie  = "bpfarm_signin"
)

// viewer is who is looking at a page.
type viewer struct {
	Name      string
	Role      string // "" when not signed in (and reads are not open)
	Anonymous bool   // reading without signing in (--anonymous-read)
	// CSRF is the token forms carry: the session's synchronizer token, or
	// the sign-in form's double-submit cookie value.
	CSRF    string
	session string // hashed session id, "" when not signed in
	// ended is set when the request carried a session cookie that is no
	// longer valid (expired, signed out, token revoked).
	ended bool
	// expires is the session's expiry (for extension).
	expires, created time.Time
}

type viewerKey struct{}

func viewerOf(r *http.Request) viewer {
	v, _ := r.Context().Value(viewerKey{}).(viewer)
	return v
}

// SignedIn reports whether the viewer has a session.
func (v viewer) SignedIn() bool { return v.session != "" }

// can reports whether the viewer may do what needs role.
func (v viewer) can(role string) bool {
	if v.Role == "" {
		return false
	}
	if v.Anonymous {
		return role == api.RoleReader
	}
	return auth.Allows(v.Role, role)
}

// CanRead, CanPublish and IsAdmin are for templates.
func (v viewer) CanRead() bool    { return v.can(api.RoleReader) }
func (v viewer) CanPublish() bool { return v.can(api.RolePublisher) }
func (v viewer) IsAdmin() bool    { return v.can(api.RoleAdmin) }

func (v viewer) checkCSRF(got string) bool {
	return v.CSRF != "" && len(got) == len(v.CSRF) && subtle.ConstantTimeCompare([]byte(got), []byte(v.CSRF)) == 1
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionHash is how a session id is stored.
func sessionHash(value string) string {
	h := sha256.Sum256([]byte("bpfarm-session\x00" + value))
	return hex.EncodeToString(h[:])
}

// viewer resolves the request's session cookie; without a session the
// viewer is anonymous (a reader when reads are open) and carries the
// sign-in form's CSRF cookie, if any.
func (u *UI) viewer(w http.ResponseWriter, r *http.Request) (viewer, error) {
	var v viewer
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		s, err := u.cfg.DB.Session(r.Context(), sessionHash(c.Value))
		switch {
		case err == nil:
			v = viewer{Name: s.TokenName, Role: s.Role, CSRF: s.CSRF, session: s.ID, expires: s.ExpiresAt, created: s.CreatedAt}
			u.extend(r, v)
			return v, nil
		case errors.Is(err, store.ErrNotFound):
			v.ended = true
			clearCookie(w, r, sessionCookie)
		default:
			return v, err
		}
	}
	if u.cfg.AnonymousRead {
		v.Name, v.Role, v.Anonymous = "anonymous", api.RoleReader, true
	}
	if c, err := r.Cookie(signinCookie); err == nil && len(c.Value) == 43 {
		v.CSRF = c.Value
	}
	return v, nil
}

// extend slides a session's expiry when less than half of its time to
// live remains, up to MaxSessionAge after sign-in.
func (u *UI) extend(r *http.Request, v viewer) {
	now := time.Now()
	if v.expires.Sub(now) > u.cfg.SessionTTL/2 {
		return
	}
	until := now.Add(u.cfg.SessionTTL)
	if limit := v.created.Add(u.cfg.MaxSessionAge); until.After(limit) {
		until = limit
	}
	if !until.After(v.expires) {
		return
	}
	if err := u.cfg.DB.ExtendSession(r.Context(), v.session, until); err != nil {
		u.log.Warn("ui: extend session", "err", err)
	}
}

func secure(r *http.Request) bool { return r.TLS != nil }

func setCookie(w http.ResponseWriter, r *http.Request, name, value string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r)})
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, MaxAge: -1,
		SameSite: http.SameSiteStrictMode, Secure: secure(r)})
}

type signinData struct {
	Next     string
	Error    string
	Ended    bool
	SignedIn bool
}

// safeNext keeps a post-sign-in redirect on this site: a path, not a
// scheme-relative or absolute URL.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

func (u *UI) signinPage(w http.ResponseWriter, r *http.Request) {
	v := viewerOf(r)
	next := safeNext(r.URL.Query().Get("next"))
	if v.SignedIn() {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	u.renderSignin(w, r, http.StatusOK, signinData{Next: next, Ended: r.URL.Query().Get("ended") == "1"})
}

func (u *UI) renderSignin(w http.ResponseWriter, r *http.Request, code int, d signinData) {
	v := viewerOf(r)
	if v.CSRF == "" {
		v.CSRF = randomToken()
		setCookie(w, r, signinCookie, v.CSRF)
		r = r.WithContext(contextWithViewer(r, v))
	}
	u.render(w, r, code, "signin.html", page{Title: "Sign in", Active: "signin", Data: d})
}

// signin checks a pasted token and opens a session for it.
func (u *UI) signin(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostForm.Get("next"))
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	if secret == "" {
		u.renderSignin(w, r, http.StatusBadRequest, signinData{Next: next, Error: "Paste a token."})
		return
	}
	tok, err := auth.Authenticate(r.Context(), u.cfg.DB, secret)
	if errors.Is(err, auth.ErrUnknownToken) {
		u.log.Info("ui: sign-in refused", "reason", "unknown or revoked token", "remote", r.RemoteAddr)
		u.renderSignin(w, r, http.StatusUnauthorized, signinData{Next: next,
			Error: "That token is unknown or revoked."})
		return
	}
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	if tok.Role == api.RoleHost {
		u.log.Info("ui: sign-in refused", "reason", "host token", "token", tok.Name, "remote", r.RemoteAddr)
		u.renderSignin(w, r, http.StatusForbidden, signinData{Next: next,
			Error: "That is a host's token (for bpfarm-agent); sign in with a reader, publisher or admin token."})
		return
	}
	// A new id on every sign-in; any session the browser had ends.
	if v := viewerOf(r); v.SignedIn() {
		u.cfg.DB.DeleteSession(r.Context(), v.session)
	}
	value := randomToken()
	now := time.Now().UTC()
	ua := r.UserAgent()
	if len(ua) > 200 {
		ua = ua[:200]
	}
	if err := u.cfg.DB.CreateSession(r.Context(), store.Session{ID: sessionHash(value), TokenID: tok.TokenID, Role: tok.Role,
		CSRF: randomToken(), CreatedAt: now, ExpiresAt: now.Add(u.cfg.SessionTTL), UserAgent: ua}); err != nil {
		u.serverError(w, r, err)
		return
	}
	// Opportunistic clean-up of ended sessions.
	if _, err := u.cfg.DB.DeleteExpiredSessions(r.Context()); err != nil {
		u.log.Warn("ui: delete expired sessions", "err", err)
	}
	u.log.Info("ui: signed in", "token", tok.Name, "role", tok.Role)
	setCookie(w, r, sessionCookie, value)
	clearCookie(w, r, signinCookie)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) signout(w http.ResponseWriter, r *http.Request) {
	v := viewerOf(r)
	if v.SignedIn() {
		if err := u.cfg.DB.DeleteSession(r.Context(), v.session); err != nil {
			u.serverError(w, r, err)
			return
		}
		u.log.Info("ui: signed out", "token", v.Name)
	}
	clearCookie(w, r, sessionCookie)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}
