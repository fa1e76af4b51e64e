// Package web is bpfarm's web UI, server-rendered with html/template and
// embedded in the server binary; nothing is loaded from a CDN.
package web

import (
	"embed"
	"html/template"
	"log/slog"
	"net/http"

	"github.com/bpfarm/bpfarm/server/store"
)

//go:embed templates/*.html static/*
var files embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
}).ParseFS(files, "templates/*.html"))

// New returns the UI handler, to be mounted at /.
func New(db *store.DB) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.FileServerFS(files))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ps, err := db.Programs(r.Context())
		if err != nil {
			slog.Error("ui: list programs", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pages.ExecuteTemplate(w, "index.html", ps); err != nil {
			slog.Error("ui: render", "err", err)
		}
	})
	return mux
}
