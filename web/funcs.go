package web

import (
	"context"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// parsePages parses every page template together with the layout and the
// shared partials.
func parsePages(funcs template.FuncMap) map[string]*template.Template {
	base := template.Must(template.New("").Funcs(funcs).ParseFS(files, "templates/_*.html"))
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := path.Base(n)
		if strings.HasPrefix(name, "_") {
			continue
		}
		t := template.Must(template.Must(base.Clone()).ParseFS(files, n))
		out[name] = t
	}
	return out
}

func contextWithViewer(r *http.Request, v viewer) context.Context {
	return context.WithValue(r.Context(), viewerKey{}, v)
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func pathEscape(s string) string { return url.PathEscape(s) }

// kernelPath escapes each segment of a kernel id for a URL path.
func kernelPath(kid string) string {
	parts := strings.Split(kid, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "/kernels/" + strings.Join(parts, "/")
}

// humanSize formats a byte count with binary units.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func percent(a, b int64) string {
	if b == 0 {
		return "–"
	}
	p := 100 * float64(a) / float64(b)
	switch {
	case p == 0:
		return "0 %"
	case p < 0.1:
		return "< 0.1 %"
	case p < 10:
		return fmt.Sprintf("%.1f %%", p)
	}
	return fmt.Sprintf("%.0f %%", p)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// icons pair every status with a symbol, so that color is never the only
// signal (the status word is always written too).
var icons = map[string]string{
	"ok": "✓", "succeeded": "✓", "loaded": "✓", "valid": "✓", "done": "✓",
	"poisoned": "⚠", "rolled_back": "↶", "warning": "⚠", "unsupported": "⊘",
	"failed": "✗", "error": "✗", "fatal error": "✗", "invalid": "✗",
	"queued": "…", "running": "↻", "pending": "…",
	"none": "–", "idle": "–", "note": "ℹ", "verified": "✔",
	"present": "✓", "missing": "✗", "unknown": "?", "rejected": "✗", "timeout": "⌛",
	"kernel-error": "✗", "runner-error": "✗", "skipped": "–",
}

func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"short":      short,
		"size":       humanSize,
		"percent":    percent,
		"ago":        ago,
		"kernelPath": kernelPath,
		"pathEscape": pathEscape,
		"icon":       iconOf,
		"badge":      badge,
		"counts":     tallyHTML,
		"row":        rowHTML,
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04 UTC")
		},
		"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"clock": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"static": func(name string) string {
			if f, ok := u.static[name]; ok {
				return "/static/" + name + "?v=" + f.etag
			}
			return "/static/" + name
		},
		"add":  func(a, b int) int { return a + b },
		"join": strings.Join,
		"ms": func(ms int64) string {
			return (time.Duration(ms) * time.Millisecond).Round(time.Millisecond).String()
		},
		"status": func(s string) string { // a status as a CSS class
			return strings.ReplaceAll(s, " ", "-")
		},
		"hasPrefix": strings.HasPrefix,
		"int64":     func(n int) int64 { return int64(n) },
	}
}

// pager is one page of a long list.
type pager struct {
	Page, Pages int
	From, To    int // slice bounds of this page
	Prev, Next  string
}

// paginate picks the page of n items that ?page= asks for; Prev and Next
// are the links to the neighbors, keeping the other query parameters.
func paginate(r *http.Request, n, per int) pager {
	p := pager{Page: 1, Pages: max(1, (n+per-1)/per)}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 1 {
		p.Page = min(v, p.Pages)
	}
	p.From = min((p.Page-1)*per, n)
	p.To = min(p.From+per, n)
	link := func(page int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(page))
		return r.URL.Path + "?" + q.Encode()
	}
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
	return p
}
