package decode

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Table prints records of one type as a text table: one column per
// top-level field (a single "VALUE" column for a type that is not a
// struct), nested values in braces and brackets.
type Table struct {
	d      *Decoder
	cols   []*node
	widths []int
}

// NewTable returns a Table for d's records.
func NewTable(d *Decoder) *Table {
	t := &Table{d: d}
	if d.root.kind == kindStruct && len(d.root.fields) > 0 {
		t.cols = d.root.fields
	} else {
		root := *d.root
		root.name = "value"
		t.cols = []*node{&root}
	}
	for _, c := range t.cols {
		t.widths = append(t.widths, max(c.width, len(c.name)))
	}
	return t
}

// Header returns the table's header line, with a newline.
func (t *Table) Header() string {
	var sb strings.Builder
	for i, c := range t.cols {
		t.pad(&sb, i, strings.ToUpper(c.name))
	}
	return strings.TrimRight(sb.String(), " ") + "\n"
}

func (t *Table) pad(sb *strings.Builder, i int, s string) {
	sb.WriteString(s)
	if i == len(t.cols)-1 {
		return
	}
	for n := len(s); n < t.widths[i]; n++ {
		sb.WriteByte(' ')
	}
	sb.WriteByte(' ')
}

// AppendRow appends the row of record b, with a newline. b must have
// exactly the decoder's size.
func (t *Table) AppendRow(dst, b []byte) ([]byte, error) {
	if err := t.d.check(b); err != nil {
		return dst, err
	}
	var sb strings.Builder
	for i, c := range t.cols {
		t.pad(&sb, i, string(c.appendText(nil, b, 0)))
	}
	dst = append(dst, strings.TrimRight(sb.String(), " ")...)
	return append(dst, '\n'), nil
}

// AppendText appends the text form of b (one line; nested values in
// braces and brackets), which must have exactly d's size.
func (d *Decoder) AppendText(dst, b []byte) ([]byte, error) {
	if err := d.check(b); err != nil {
		return dst, err
	}
	return d.root.appendText(dst, b, 0), nil
}

// appendText appends n's value at base as text.
func (n *node) appendText(dst, b []byte, base int) []byte {
	switch n.kind {
	case kindString:
		return append(dst, printable(n.stringAt(b, base))...)
	case kindEnum:
		name, signed, v := n.enumAt(b, base)
		switch {
		case name != "":
			return append(dst, name...)
		case signed:
			return strconv.AppendInt(dst, int64(v), 10)
		default:
			return strconv.AppendUint(dst, v, 10)
		}
	case kindStruct:
		dst = append(dst, '{')
		for i, f := range n.fields {
			if i > 0 {
				dst = append(dst, ' ')
			}
			dst = append(dst, f.name...)
			dst = append(dst, '=')
			dst = f.appendText(dst, b, base+n.off)
		}
		return append(dst, '}')
	case kindArray:
		dst = append(dst, '[')
		start := base + n.off
		for i := 0; i < n.n; i++ {
			if i > 0 {
				dst = append(dst, ' ')
			}
			dst = n.elem.appendText(dst, b, start+i*n.elem.size)
		}
		return append(dst, ']')
	case kindHist:
		h := Histogram{Slots: n.slots(b, base)}
		return append(dst, fmt.Sprintf("[log2 histogram: %d values]", h.Total())...)
	case kindBytes:
		dst = append(dst, "0x"...)
		return hex.AppendEncode(dst, b[base+n.off:base+n.off+n.size])
	default:
		return n.appendJSON(dst, b, base)
	}
}

// printable replaces control characters with '.', so that a record cannot
// move the terminal's cursor.
func printable(s []byte) []byte {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			out := make([]byte, len(s))
			for i, c := range s {
				if c < 0x20 || c == 0x7f {
					c = '.'
				}
				out[i] = c
			}
			return out
		}
	}
	return s
}

// FormatValue returns the one-line text form of a generic value (as
// Decode returns them).
func FormatValue(v any) string {
	return string(appendValueText(nil, v))
}

func appendValueText(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, '-')
	case string:
		return append(dst, printable([]byte(v))...)
	case Struct:
		dst = append(dst, '{')
		for i, f := range v {
			if i > 0 {
				dst = append(dst, ' ')
			}
			dst = append(dst, f.Name...)
			dst = append(dst, '=')
			dst = appendValueText(dst, f.Value)
		}
		return append(dst, '}')
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ' ')
			}
			dst = appendValueText(dst, e)
		}
		return append(dst, ']')
	case Histogram:
		return append(dst, fmt.Sprintf("[log2 histogram: %d values]", v.Total())...)
	case Bytes:
		return append(dst, v.String()...)
	}
	return appendValueJSON(dst, v)
}

// AppendHistogram appends h as libbpf-tools' print_log2_hist prints it,
// with label naming the values (e.g. "usecs"). An empty histogram appends
// nothing.
func AppendHistogram(dst []byte, h Histogram, label string) []byte {
	idxMax := -1
	var valMax uint64
	for i, v := range h.Slots {
		if v > 0 {
			idxMax = i
		}
		valMax = max(valMax, v)
	}
	if idxMax < 0 {
		return dst
	}
	wide := idxMax > 32
	pad, labelWidth, width, stars := 5, 19, 10, 40
	if wide {
		pad, labelWidth, width, stars = 15, 29, 20, 20
	}
	dst = fmt.Appendf(dst, "%*s%-*s : count    distribution\n", pad, "", labelWidth, label)
	for i := 0; i <= idxMax; i++ {
		low, high := SlotRange(i)
		v := h.Slots[i]
		dst = fmt.Appendf(dst, "%*d -> %-*d : %-8d |", width, low, width, high, v)
		n := int(min(v, valMax) * uint64(stars) / valMax)
		for j := 0; j < stars; j++ {
			if j < n {
				dst = append(dst, '*')
			} else {
				dst = append(dst, ' ')
			}
		}
		dst = append(dst, "|\n"...)
	}
	return dst
}
