package web

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/server/archive"
	"github.com/bpfarm/bpfarm/server/auth"
	"github.com/bpfarm/bpfarm/server/blob"
	"github.com/bpfarm/bpfarm/server/build"
	"github.com/bpfarm/bpfarm/server/intake"
	"github.com/bpfarm/bpfarm/server/signing"
	"github.com/bpfarm/bpfarm/server/store"
)

// testEnv is a UI over a fresh database and blob store, without
// compiler or workers (uploads are not compiled).
type testEnv struct {
	ui    *UI
	db    *store.DB
	blobs blob.Store
	key   *signing.Key
}

func newTestEnv(tb testing.TB, mod func(*Config)) *testEnv {
	tb.Helper()
	dir := tb.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "test.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	blobs, err := blob.NewLocal(filepath.Join(dir, "blobs"))
	if err != nil {
		tb.Fatal(err)
	}
	key, err := signing.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	arch, err := archive.New(archive.Config{DB: db, Blobs: blobs, Log: log, CacheDir: filepath.Join(dir, "kernels")})
	if err != nil {
		tb.Fatal(err)
	}
	builds := build.New(build.Config{DB: db, Blobs: blobs, Archive: arch})
	cfg := Config{DB: db, Blobs: blobs, Key: key, Builds: builds,
		Intake: intake.New(intake.Config{Archive: arch, Builds: builds, TempDir: dir}), Logger: log, TempDir: dir}
	if mod != nil {
		mod(&cfg)
	}
	return &testEnv{ui: New(cfg), db: db, blobs: blobs, key: key}
}

// tbWriter sends log lines to the test's log (shown on failure).
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// token creates a token and returns its secret.
func (e *testEnv) token(tb testing.TB, name, role string) string {
	tb.Helper()
	secret, err := auth.NewSecret()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.db.CreateToken(context.Background(), name, role, auth.Hash(secret)); err != nil {
		tb.Fatal(err)
	}
	return secret
}

// client is a cookie-keeping browser stand-in.
type client struct {
	e       *testEnv
	cookies map[string]string
	origin  string
}

func (e *testEnv) client() *client {
	return &client{e: e, cookies: map[string]string{}, origin: "http://bpfarm.test"}
}

func (c *client) do(tb testing.TB, method, path string, form url.Values) *httptest.ResponseRecorder {
	tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, "http://bpfarm.test"+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method != http.MethodGet && c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	for k, v := range c.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	rec := httptest.NewRecorder()
	c.e.ui.ServeHTTP(rec, req)
	for _, ck := range rec.Result().Cookies() {
		if ck.MaxAge < 0 || ck.Value == "" {
			delete(c.cookies, ck.Name)
		} else {
			c.cookies[ck.Name] = ck.Value
		}
	}
	return rec
}

// multipart posts a multipart form: fields in order, then files.
func (c *client) multipart(tb testing.TB, path string, fields [][2]string, files map[string][]byte) *httptest.ResponseRecorder {
	tb.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		mw.WriteField(f[0], f[1])
	}
	for name, data := range files {
		fw, _ := mw.CreateFormFile(fileField(path), name)
		fw.Write(data)
	}
	mw.Close()
	req := httptest.NewRequest(http.MethodPost, "http://bpfarm.test"+path, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Origin", c.origin)
	for k, v := range c.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	rec := httptest.NewRecorder()
	c.e.ui.ServeHTTP(rec, req)
	return rec
}

func fileField(path string) string {
	if path == "/upload" {
		return "files"
	}
	return "file"
}

// formCSRF finds a form's CSRF token.
func formCSRF(tb testing.TB, body string) string {
	tb.Helper()
	const marker = `name="csrf" value="`
	i := strings.Index(body, marker)
	if i < 0 {
		tb.Fatalf("no csrf field in:\n%s", body)
	}
	rest := body[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}

// signIn signs c in with secret through the sign-in form.
func (c *client) signIn(tb testing.TB, secret string) {
	tb.Helper()
	page := c.do(tb, http.MethodGet, "/signin", nil)
	if page.Code != http.StatusOK {
		tb.Fatalf("sign-in page: %d", page.Code)
	}
	res := c.do(tb, http.MethodPost, "/signin", url.Values{"csrf": {formCSRF(tb, page.Body.String())}, "token": {secret}, "next": {"/"}})
	if res.Code != http.StatusSeeOther || c.cookies[sessionCookie] == "" {
		tb.Fatalf("sign in: %d %s", res.Code, res.Body.String())
	}
}

func (e *testEnv) expire(tb testing.TB) {
	tb.Helper()
	if _, err := e.db.SQL().Exec(`UPDATE sessions SET expires_at = ?`, time.Now().UTC().Add(-time.Minute)); err != nil {
		tb.Fatal(err)
	}
}
