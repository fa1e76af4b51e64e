package web

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

func TestSignInAndOut(t *testing.T) {
	e := newTestEnv(t, nil)
	admin := e.token(t, "admin", api.RoleAdmin)
	c := e.client()

	res := c.do(t, http.MethodGet, "/kernels?q=x", nil)
	if res.Code != http.StatusSeeOther || res.Header().Get("Location") != "/signin?next=%2Fkernels%3Fq%3Dx" {
		t.Fatalf("anonymous visit: %d %q", res.Code, res.Header().Get("Location"))
	}
	page := c.do(t, http.MethodGet, "/signin?next=/kernels", nil)
	csrf := formCSRF(t, page.Body.String())
	// A wrong token is refused, and says so.
	res = c.do(t, http.MethodPost, "/signin", url.Values{"csrf": {csrf}, "token": {"bpfarm_nope"}, "next": {"/kernels"}})
	if res.Code != http.StatusUnauthorized || !strings.Contains(res.Body.String(), "unknown or revoked") {
		t.Fatalf("wrong token: %d", res.Code)
	}
	res = c.do(t, http.MethodPost, "/signin", url.Values{"csrf": {csrf}, "token": {" " + admin + "\n"}, "next": {"/kernels"}})
	if res.Code != http.StatusSeeOther || res.Header().Get("Location") != "/kernels" {
		t.Fatalf("sign in: %d %q", res.Code, res.Header().Get("Location"))
	}
	var sc *http.Cookie
	for _, ck := range res.Result().Cookies() {
		if ck.Name == sessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Secure || sc.Path != "/" {
		t.Fatalf("session cookie: %+v", sc)
	}
	// The database holds the hash of the cookie, not the cookie.
	var n int
	e.db.SQL().QueryRow(`SELECT COUNT(*) FROM sessions WHERE id = ?`, sc.Value).Scan(&n)
	if n != 0 {
		t.Fatal("session id stored in clear")
	}
	if _, err := e.db.Session(context.Background(), sessionHash(sc.Value)); err != nil {
		t.Fatal(err)
	}
	res = c.do(t, http.MethodGet, "/", nil)
	if res.Code != http.StatusOK || !strings.Contains(res.Body.String(), "Sign out") {
		t.Fatalf("signed in: %d", res.Code)
	}
	// Open redirects are not followed.
	for _, next := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example"} {
		if got := safeNext(next); got != "/" {
			t.Errorf("safeNext(%q) = %q", next, got)
		}
	}
	// Sign out ends the session for good.
	res = c.do(t, http.MethodPost, "/signout", url.Values{"csrf": {formCSRF(t, c.do(t, http.MethodGet, "/", nil).Body.String())}})
	if res.Code != http.StatusSeeOther {
		t.Fatalf("sign out: %d", res.Code)
	}
	e.db.SQL().QueryRow(`SELECT COUNT(*) FROM sessions`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d sessions left after sign-out", n)
	}
	c.cookies[sessionCookie] = sc.Value // a copy of the old cookie opens nothing
	if res := c.do(t, http.MethodGet, "/", nil); res.Code != http.StatusSeeOther {
		t.Fatalf("old cookie after sign-out: %d", res.Code)
	}
}

func TestCSRF(t *testing.T) {
	e := newTestEnv(t, nil)
	admin := e.token(t, "admin", api.RoleAdmin)

	// Sign-in needs the double-submit cookie and the same value in the form.
	c := e.client()
	page := c.do(t, http.MethodGet, "/signin", nil)
	csrf := formCSRF(t, page.Body.String())
	stranger := e.client() // never saw the form
	if res := stranger.do(t, http.MethodPost, "/signin", url.Values{"csrf": {csrf}, "token": {admin}}); res.Code != http.StatusForbidden {
		t.Fatalf("sign-in without the cookie: %d", res.Code)
	}
	if res := c.do(t, http.MethodPost, "/signin", url.Values{"csrf": {strings.Repeat("A", len(csrf))}, "token": {admin}}); res.Code != http.StatusForbidden {
		t.Fatalf("sign-in with another token: %d", res.Code)
	}

	c.signIn(t, admin)
	good := formCSRF(t, c.do(t, http.MethodGet, "/", nil).Body.String())
	if good == csrf {
		t.Fatal("the session reuses the sign-in form's token")
	}
	cases := []struct {
		name   string
		form   url.Values
		header map[string]string
	}{
		{"no token", url.Values{}, nil},
		{"wrong token", url.Values{"csrf": {"x" + good[1:]}}, nil},
		{"other origin", url.Values{"csrf": {good}}, map[string]string{"Origin": "http://evil.example"}},
		{"null origin", url.Values{"csrf": {good}}, map[string]string{"Origin": "null"}},
		{"other referer", url.Values{"csrf": {good}}, map[string]string{"Origin": "", "Referer": "http://evil.example/x"}},
		{"cross-site fetch", url.Values{"csrf": {good}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
	}
	for _, tc := range cases {
		req := httptest.NewRequest(http.MethodPost, "http://bpfarm.test/signout", strings.NewReader(tc.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "http://bpfarm.test")
		for k, v := range tc.header {
			if v == "" {
				req.Header.Del(k)
			} else {
				req.Header.Set(k, v)
			}
		}
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: c.cookies[sessionCookie]})
		rec := httptest.NewRecorder()
		e.ui.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, rec.Code)
		}
	}
	// Multipart forms: the token must be the first part, checked before
	// the files are read.
	multi := func(csrf string, first bool) int {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		if first {
			mw.WriteField("csrf", csrf)
		}
		fw, _ := mw.CreateFormFile("files", "p.bpf.c")
		fw.Write([]byte("int x;"))
		if !first {
			mw.WriteField("csrf", csrf)
		}
		mw.Close()
		req := httptest.NewRequest(http.MethodPost, "http://bpfarm.test/upload", &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Origin", "http://bpfarm.test")
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: c.cookies[sessionCookie]})
		rec := httptest.NewRecorder()
		e.ui.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := multi("wrong", true); code != http.StatusForbidden {
		t.Errorf("upload with a wrong token: %d", code)
	}
	if code := multi(good, false); code != http.StatusForbidden {
		t.Errorf("upload with the token after the files: %d", code)
	}
	// Multipart is refused where no handler checks it.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("csrf", good)
	mw.Close()
	req := httptest.NewRequest(http.MethodPost, "http://bpfarm.test/signout", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: c.cookies[sessionCookie]})
	rec := httptest.NewRecorder()
	e.ui.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("multipart sign-out: %d", rec.Code)
	}
	// The right token from the right origin works.
	if res := c.do(t, http.MethodPost, "/signout", url.Values{"csrf": {good}}); res.Code != http.StatusSeeOther {
		t.Fatalf("sign out: %d", res.Code)
	}
}

func TestRoleVisibility(t *testing.T) {
	e := newTestEnv(t, func(c *Config) {})
	Seed(t, e.db, e.blobs, e.key, SeedOptions{Kernels: 20, Programs: 3, Hosts: 3})
	type want struct {
		upload, importForm bool
		uploadCode         int
		importCode         int
	}
	for role, w := range map[string]want{
		api.RoleReader:    {false, false, http.StatusForbidden, http.StatusForbidden},
		api.RolePublisher: {true, false, http.StatusOK, http.StatusForbidden},
		api.RoleAdmin:     {true, true, http.StatusOK, http.StatusBadRequest},
	} {
		c := e.client()
		c.signIn(t, e.token(t, "t-"+role, role))
		home := c.do(t, http.MethodGet, "/", nil).Body.String()
		if got := strings.Contains(home, `href="/upload"`); got != w.upload {
			t.Errorf("%s: upload link shown %v", role, got)
		}
		kernels := c.do(t, http.MethodGet, "/kernels", nil).Body.String()
		if got := strings.Contains(kernels, `action="/kernels/import"`); got != w.importForm {
			t.Errorf("%s: import form shown %v", role, got)
		}
		if code := c.do(t, http.MethodGet, "/upload", nil).Code; code != w.uploadCode {
			t.Errorf("%s: GET /upload %d, want %d", role, code, w.uploadCode)
		}
		csrf := formCSRF(t, home)
		if code := c.multipart(t, "/kernels/import", [][2]string{{"csrf", csrf}}, nil).Code; code != w.importCode {
			t.Errorf("%s: POST /kernels/import %d, want %d", role, code, w.importCode)
		}
		for _, p := range []string{"/", "/kernels", "/hosts"} {
			if code := c.do(t, http.MethodGet, p, nil).Code; code != http.StatusOK {
				t.Errorf("%s: GET %s: %d", role, p, code)
			}
		}
	}

	// Without a session nothing is readable, unless reads are open.
	anon := e.client()
	if code := anon.do(t, http.MethodGet, "/hosts", nil).Code; code != http.StatusSeeOther {
		t.Errorf("anonymous /hosts: %d", code)
	}
	open := newTestEnv(t, func(c *Config) { c.AnonymousRead = true })
	anon = open.client()
	res := anon.do(t, http.MethodGet, "/", nil)
	if res.Code != http.StatusOK || strings.Contains(res.Body.String(), `href="/upload"`) || !strings.Contains(res.Body.String(), "Sign in") {
		t.Errorf("anonymous read: %d", res.Code)
	}
	if code := anon.do(t, http.MethodGet, "/upload", nil).Code; code != http.StatusSeeOther {
		t.Errorf("anonymous /upload with open reads: %d, want a redirect to sign in", code)
	}
}

func TestSessionExpiryAndRevocation(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.SessionTTL = time.Hour })
	c := e.client()
	c.signIn(t, e.token(t, "alice", api.RolePublisher))
	if code := c.do(t, http.MethodGet, "/", nil).Code; code != http.StatusOK {
		t.Fatalf("signed in: %d", code)
	}

	// A session used in the second half of its life is extended.
	e.db.SQL().Exec(`UPDATE sessions SET expires_at = ?`, time.Now().UTC().Add(10*time.Minute))
	c.do(t, http.MethodGet, "/", nil)
	var exp time.Time
	e.db.SQL().QueryRow(`SELECT expires_at FROM sessions`).Scan(&exp)
	if time.Until(exp) < 50*time.Minute {
		t.Fatalf("session not extended: expires %v", exp)
	}

	// An expired session opens nothing; the page says so and the cookie goes.
	e.expire(t)
	res := c.do(t, http.MethodGet, "/hosts", nil)
	if res.Code != http.StatusSeeOther || !strings.Contains(res.Header().Get("Location"), "ended=1") {
		t.Fatalf("expired session: %d %q", res.Code, res.Header().Get("Location"))
	}
	if _, ok := c.cookies[sessionCookie]; ok {
		t.Fatal("expired session cookie kept")
	}
	if !strings.Contains(c.do(t, http.MethodGet, "/signin?ended=1", nil).Body.String(), "session ended") {
		t.Fatal("sign-in page does not say the session ended")
	}

	// Revoking the token kills its sessions.
	c.signIn(t, e.token(t, "bob", api.RoleAdmin))
	other := e.client()
	other.signIn(t, e.token(t, "carol", api.RoleReader))
	if err := e.db.RevokeToken(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	if code := c.do(t, http.MethodGet, "/", nil).Code; code != http.StatusSeeOther {
		t.Fatalf("session of a revoked token: %d", code)
	}
	var n int
	e.db.SQL().QueryRow(`SELECT COUNT(*) FROM sessions s JOIN tokens t ON t.id = s.token_id WHERE t.name = 'bob'`).Scan(&n)
	if n != 0 {
		t.Fatalf("revoked token keeps %d sessions", n)
	}
	if code := other.do(t, http.MethodGet, "/", nil).Code; code != http.StatusOK {
		t.Fatalf("another token's session: %d", code)
	}
}
