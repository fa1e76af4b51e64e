package web

import (
	"net/http"
	"testing"

	"github.com/bpfarm/bpfarm/api"
)

// SeededUI returns the UI over a seeded database (see Seed) and an admin
// token's secret, for the browser tests of package web_test.
func SeededUI(tb testing.TB, opt SeedOptions) (http.Handler, Seeded, string) {
	tb.Helper()
	e := newTestEnv(tb, nil)
	s := Seed(tb, e.db, e.blobs, e.key, opt)
	return e.ui, s, e.token(tb, "admin", api.RoleAdmin)
}
