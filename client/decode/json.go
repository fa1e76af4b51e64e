package decode

import (
	"encoding/hex"
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the JSON encoding of b, which must have exactly d's
// size, to dst. It encodes what Decode returns, without building it.
func (d *Decoder) AppendJSON(dst, b []byte) ([]byte, error) {
	if len(b) != d.size {
		return dst, d.check(b)
	}
	if d.flat.max >= 0 {
		return d.flat.appendBounded(dst, b), nil
	}
	return appendFlat(dst, d.flat.ops, b), nil
}

// appendJSON appends n's value at base.
func (n *node) appendJSON(dst, b []byte, base int) []byte {
	switch n.kind {
	case kindUint:
		return strconv.AppendUint(dst, n.uintAt(b, base), 10)
	case kindInt:
		return strconv.AppendInt(dst, n.intAt(b, base), 10)
	case kindBool:
		return strconv.AppendBool(dst, n.uintAt(b, base) != 0)
	case kindFloat:
		return appendFloat(dst, n.floatAt(b, base))
	case kindString:
		return appendJSONBytes(dst, n.stringAt(b, base))
	case kindEnum:
		name, signed, v := n.enumAt(b, base)
		switch {
		case name != "":
			return appendJSONString(dst, name)
		case signed:
			return strconv.AppendInt(dst, int64(v), 10)
		default:
			return strconv.AppendUint(dst, v, 10)
		}
	case kindStruct:
		dst = append(dst, '{')
		for i, f := range n.fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, f.jsonKey...)
			dst = f.appendJSON(dst, b, base+n.off)
		}
		return append(dst, '}')
	case kindArray:
		dst = append(dst, '[')
		start := base + n.off
		for i := 0; i < n.n; i++ {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = n.elem.appendJSON(dst, b, start+i*n.elem.size)
		}
		return append(dst, ']')
	case kindHist:
		return appendBucketsJSON(dst, n.slots(b, base))
	default:
		dst = append(dst, `"0x`...)
		dst = hex.AppendEncode(dst, b[base+n.off:base+n.off+n.size])
		return append(dst, '"')
	}
}

// appendBucketsJSON appends a histogram's buckets.
func appendBucketsJSON(dst []byte, slots []uint64) []byte {
	dst = append(dst, '[')
	for i, bk := range (Histogram{Slots: slots}).Buckets() {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"low":`...)
		dst = strconv.AppendUint(dst, bk.Low, 10)
		dst = append(dst, `,"high":`...)
		dst = strconv.AppendUint(dst, bk.High, 10)
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendUint(dst, bk.Count, 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendValueJSON appends the JSON encoding of a generic value.
func appendValueJSON(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...)
	case uint64:
		return strconv.AppendUint(dst, v, 10)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case bool:
		return strconv.AppendBool(dst, v)
	case float64:
		return appendFloat(dst, v)
	case string:
		return appendJSONString(dst, v)
	case Struct:
		dst = append(dst, '{')
		for i, f := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendKey(dst, f.Name)
			dst = appendValueJSON(dst, f.Value)
		}
		return append(dst, '}')
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendValueJSON(dst, e)
		}
		return append(dst, ']')
	case Histogram:
		return appendBucketsJSON(dst, v.Slots)
	case Bytes:
		return appendJSONString(dst, v.String())
	case []Struct:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendValueJSON(dst, e)
		}
		return append(dst, ']')
	}
	return appendJSONString(dst, "?")
}

// appendFloat appends f as JSON (null for NaN and infinities, which JSON
// cannot hold).
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	return appendJSONBytes(dst, []byte(s))
}

const hexDigits = "0123456789abcdef"

// strClass classifies a byte of a C string for the bounded encoder: 0 is
// copied as is, strEnd ends the string, strEscape needs appendJSONBody.
var strClass = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c == 0:
			t[c] = strEnd
		case c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf:
			t[c] = strEscape
		}
	}
	return t
}()

const (
	strEnd = 1 + iota
	strEscape
)

// Words of eight bytes, for scanning C strings a word at a time.
const (
	ones8 = 0x0101010101010101
	high8 = 0x8080808080808080
)

// special returns, for eight bytes of a C string as a little-endian word,
// a mask whose lowest set bit is the high bit of the first byte that the
// bounded encoder cannot copy as is: NUL, a control character, '"', '\\' or a
// byte of non-ASCII (0 when there is none). Bits above the lowest may be
// set spuriously (borrows), never below it.
func special(x uint64) uint64 {
	ctl := (x - 0x20*ones8) &^ x // a byte < 0x20
	q := x ^ '"'*ones8
	q = (q - ones8) &^ q // a byte == '"'
	bs := x ^ '\\'*ones8
	bs = (bs - ones8) &^ bs // a byte == '\\'
	return (ctl | q | bs | x) & high8
}

// appendJSONBytes appends s as a JSON string: control characters and
// invalid UTF-8 are escaped (invalid bytes become U+FFFD).
func appendJSONBytes(dst, s []byte) []byte {
	return append(appendJSONBody(append(dst, '"'), s), '"')
}

// appendJSONBody appends s escaped for a JSON string, without the quotes.
func appendJSONBody(dst, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
