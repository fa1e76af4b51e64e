package web

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/bpfarm/bpfarm/api"
)

// BenchmarkRenderPages renders each page server-side with 1000 kernels ×
// 50 programs in the database (two revisions each, the latest built for
// two arches and relocated for every kernel: ~90,000 artifacts with JSON
// reports) and 200 hosts. The target is ≤ 50 ms per page.
func BenchmarkRenderPages(b *testing.B) {
	e := newTestEnv(b, nil)
	s := Seed(b, e.db, e.blobs, e.key, SeedOptions{Kernels: 1000, Programs: 50, Hosts: 200})
	b.Logf("seeded %d kernels, %d artifacts", s.Kernels, s.Artifacts)
	c := e.client()
	c.signIn(b, e.token(b, "admin", api.RoleAdmin))
	pages := []struct{ name, path string }{
		{"programs", "/"},
		{"programs_search", "/?q=snoop"},
		{"program_matrix", "/programs/" + s.Program},
		{"program_problems", "/programs/" + s.Program + "?only=problems"},
		{"diff", "/programs/" + s.Program + "/diff?from=" + s.RevFrom + "&to=" + s.RevTo},
		{"build", "/builds/" + strconv.FormatInt(s.BuildID, 10)},
		{"artifact", "/artifacts/" + strconv.FormatInt(s.ArtifactID, 10)},
		{"kernels", "/kernels"},
		{"kernel", kernelPath(s.Kernel)},
		{"hosts", "/hosts"},
		{"upload", "/upload"},
		{"signin", "/signin"},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, "http://bpfarm.test"+p.path, nil)
				if p.name != "signin" { // the sign-in page as a visitor sees it
					for k, v := range c.cookies {
						req.AddCookie(&http.Cookie{Name: k, Value: v})
					}
				}
				rec := httptest.NewRecorder()
				e.ui.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d", p.path, rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
}
