//go:build linux

package web_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/client"
	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server"
)

// TestUIStorageFrozen freezes the S3 server (SIGSTOP) under a real server
// with the UI mounted: a page that needs a blob answers 503 naming the
// cause, with Retry-After, within the blob deadline; pages that need only
// the database go on; once thawed the same page answers again.
func TestUIStorageFrozen(t *testing.T) {
	m := testenv.StartMinIO(t)
	ctx := context.Background()
	_, base, tok := runServer(t, server.Config{Workers: 1, S3: m.Config, BlobTimeout: time.Second, BlobIdleTimeout: 2 * time.Second})
	c, err := client.New(base, tok)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bpfsrc.Collect(filepath.Join("..", "examples", "execsnoop"), "", bpfsrc.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var res *api.PushResult
	for deadline := time.Now().Add(time.Minute); ; {
		if res, err = c.Push(ctx, "execsnoop", b, client.PushOptions{}); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // not ready yet
	}
	if err != nil {
		t.Fatal(err)
	}
	build, err := c.WaitBuild(ctx, res.Builds[0].ID, nil)
	if err != nil || build.State != api.StateSucceeded {
		t.Fatalf("build: %+v %v", build, err)
	}
	ui := signInHTTP(t, base, strings.TrimSpace(string(tok)))
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := ui.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header.Get("Retry-After")
	}
	object := fmt.Sprintf("/builds/%d/object", build.ID)
	if code, _, _ := get(object); code != http.StatusOK {
		t.Fatalf("object download before the freeze: %d", code)
	}

	m.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			m.Thaw()
		}
	}()
	start := time.Now()
	code, body, retry := get(object)
	t.Logf("UI object download with S3 frozen: %d after %v", code, time.Since(start).Round(time.Millisecond))
	if code != http.StatusServiceUnavailable || retry == "" || !strings.Contains(body, "Object storage unreachable") {
		t.Errorf("UI object download with S3 frozen: %d (Retry-After %q), want 503 naming the cause:\n%s", code, retry, body)
	}
	if code, _, _ := get("/"); code != http.StatusOK {
		t.Errorf("overview page with S3 frozen: %d", code)
	}

	m.Thaw()
	thawed = true
	if code, _, _ := get(object); code != http.StatusOK {
		t.Errorf("object download after the thaw: %d", code)
	}
}

// signInHTTP returns an HTTP client signed in to the UI at base with tok,
// through the sign-in form.
func signInHTTP(t *testing.T, base, tok string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(base + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	const marker = `name="csrf" value="`
	i := bytes.Index(page, []byte(marker))
	if i < 0 {
		t.Fatalf("no csrf field in the sign-in page: %s", page)
	}
	csrf, _, _ := strings.Cut(string(page[i+len(marker):]), `"`)
	req, _ := http.NewRequest(http.MethodPost, base+"/signin",
		strings.NewReader(url.Values{"csrf": {csrf}, "token": {tok}, "next": {"/"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	return c
}
