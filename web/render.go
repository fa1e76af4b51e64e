package web

// Hot fragments rendered in Go rather than through html/template: status
// badges, outcome tallies and the coverage matrix's rows appear thousands
// of times on a page. Every variable piece goes through html.EscapeString
// (text and double-quoted attribute values only; the only URLs are built
// here from escaped path segments and numbers).

import (
	"html"
	"html/template"
	"strconv"
	"strings"
)

func writeBadge(b *strings.Builder, status, text string) {
	b.WriteString(`<span class="badge s-`)
	b.WriteString(html.EscapeString(strings.ReplaceAll(status, " ", "-")))
	b.WriteString(`"><span aria-hidden="true">`)
	b.WriteString(iconOf(status))
	b.WriteString(`</span> `)
	b.WriteString(html.EscapeString(text))
	b.WriteString(`</span>`)
}

func iconOf(s string) string {
	if i, ok := icons[s]; ok {
		return i
	}
	return "•"
}

// badge renders a status as a badge: color, symbol and word.
func badge(status string) template.HTML {
	var b strings.Builder
	writeBadge(&b, status, status)
	return template.HTML(b.String())
}

// tallyHTML renders artifact outcomes as badges.
func tallyHTML(t Tally) template.HTML {
	var b strings.Builder
	b.WriteString(`<span class="counts">`)
	one := func(status string, n int, word string) {
		if n > 0 {
			writeBadge(&b, status, strconv.Itoa(n)+" "+word)
			b.WriteByte(' ')
		}
	}
	one("ok", t.OK, "ok")
	one("poisoned", t.Poisoned, "poisoned")
	one("unsupported", t.Unsupported, "unsupported")
	one("failed", t.Failed, "failed")
	one("error", t.Error, "relocation errors")
	one("pending", t.Pending, "pending")
	if t.Total() == 0 {
		b.WriteString(`<span class="muted">no artifacts</span>`)
	}
	b.WriteString(`</span>`)
	return template.HTML(b.String())
}

// rowHTML renders one kernel row of the coverage matrix.
func rowHTML(r matrixRow) template.HTML {
	var b strings.Builder
	b.Grow(160 + 60*len(r.Cells))
	b.WriteString(`<tr><th scope="row"><a href="`)
	b.WriteString(html.EscapeString(kernelPath(r.KID)))
	b.WriteString(`" title="`)
	b.WriteString(html.EscapeString(r.KID))
	b.WriteString(`">`)
	b.WriteString(html.EscapeString(r.Release))
	b.WriteString(`</a></th>`)
	for i := range r.Cells {
		writeCell(&b, &r.Cells[i])
	}
	b.WriteString(`<td>`)
	if r.ArtifactID != 0 {
		id := strconv.FormatInt(r.ArtifactID, 10)
		b.WriteString(`<a href="/artifacts/` + id + `">#` + id + `</a>`)
	}
	b.WriteString("</td></tr>\n")
	return template.HTML(b.String())
}

func writeCellLabel(b *strings.Builder, c *matrixCell) {
	b.WriteString(`<span aria-hidden="true">`)
	b.WriteString(iconOf(c.Status))
	b.WriteString(`</span> `)
	b.WriteString(html.EscapeString(c.Status))
	if v := c.Verified; v != nil {
		if v.Accepted {
			b.WriteString(` <span class="vf">✔ verified</span>`)
		} else {
			b.WriteString(` <span class="vf bad">✗ verifier</span>`)
		}
	}
	if c.Status == "ok" && len(c.Missing) > 0 {
		b.WriteString(` <span class="vf bad">⚠ missing</span>`)
	}
}

// writeCell renders a matrix cell: a word and a symbol on a colored
// ground, and when there is more to say a <details> (keyboard operable)
// with the poisoned field paths, the error, the missing targets and the
// verifier's verdict.
func writeCell(b *strings.Builder, c *matrixCell) {
	b.WriteString(`<td class="c s-`)
	b.WriteString(html.EscapeString(c.Status))
	b.WriteString(`">`)
	if !c.Detail() {
		writeCellLabel(b, c)
		b.WriteString(`</td>`)
		return
	}
	b.WriteString(`<details><summary>`)
	writeCellLabel(b, c)
	b.WriteString(`</summary><div class="pop">`)
	if c.Error != "" {
		b.WriteString(`<p class="err">`)
		b.WriteString(html.EscapeString(c.Error))
		b.WriteString(`</p>`)
	}
	if c.Reason != "" {
		b.WriteString(`<p>Not supported by this kernel:</p><ul class="reason">`)
		for r := range strings.SplitSeq(c.Reason, "; ") {
			b.WriteString(`<li>`)
			b.WriteString(html.EscapeString(r))
			b.WriteString(`</li>`)
		}
		b.WriteString(`</ul>`)
	}
	if len(c.Poisoned) > 0 {
		b.WriteString(`<p>Poisoned relocations:</p><ul>`)
		for _, p := range c.Poisoned {
			b.WriteString(`<li><code>`)
			b.WriteString(html.EscapeString(p.Path))
			b.WriteString(`</code> <span class="muted">`)
			b.WriteString(html.EscapeString(p.Kind))
			b.WriteString(`, insn `)
			b.WriteString(strconv.Itoa(p.Instruction))
			b.WriteString(`</span> — `)
			if p.Guarded {
				b.WriteString(`<span class="guard">guarded</span> by an existence check`)
			} else {
				b.WriteString(`<strong class="unguarded">unguarded</strong>: fails to load if reached`)
			}
			b.WriteString(`</li>`)
		}
		b.WriteString(`</ul>`)
	}
	if len(c.Missing) > 0 && c.Reason == "" {
		b.WriteString(`<p>Missing in this kernel:</p><ul>`)
		for _, t := range c.Missing {
			b.WriteString(`<li>`)
			b.WriteString(html.EscapeString(t.Kind))
			b.WriteString(` <code>`)
			b.WriteString(html.EscapeString(t.Name))
			b.WriteString(`</code></li>`)
		}
		b.WriteString(`</ul>`)
	}
	if v := c.Verified; v != nil {
		b.WriteString(`<p>Verifier on the booted kernel: `)
		if v.Accepted {
			b.WriteString(`<span aria-hidden="true">✔</span> accepted`)
			if v.Instructions > 0 {
				b.WriteString(` (` + strconv.Itoa(v.Instructions) + ` instructions)`)
			}
		} else {
			b.WriteString(`<span aria-hidden="true">✗</span> rejected: `)
			b.WriteString(html.EscapeString(v.Error))
		}
		b.WriteString(`</p>`)
	}
	if c.Relocations > 0 {
		b.WriteString(`<p class="muted">` + strconv.Itoa(c.Relocations) + ` CO-RE relocations.</p>`)
	}
	if c.ArtifactID != 0 {
		id := strconv.FormatInt(c.ArtifactID, 10)
		b.WriteString(`<p><a href="/artifacts/` + id + `">Artifact #` + id + ` →</a></p>`)
	}
	b.WriteString(`</div></details></td>`)
}
