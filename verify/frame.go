package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
)

// Frame markers (see the package documentation).
const (
	markBegin  = "BPFARM-BEGIN"
	markResult = "BPFARM-RESULT"
	markEnd    = "BPFARM-END"
	markAny    = "BPFARM-"
)

// maxRecord bounds one encoded record.
const maxRecord = 256 << 10

func crcHex(s string) string {
	return fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(s)))
}

// EncodeFrames returns the framed lines of records, as the runner writes
// them: BEGIN, one RESULT per record, END, each ending in "\n".
func EncodeFrames(nonce string, records []Record) ([]string, error) {
	lines := []string{fmt.Sprintf("%s %d %s\n", markBegin, JobVersion, nonce)}
	h := sha256.New()
	for i, r := range records {
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		if len(b) > maxRecord {
			return nil, fmt.Errorf("record %d: %d bytes, at most %d", i, len(b), maxRecord)
		}
		h.Write(b)
		body := fmt.Sprintf("%s %s %d %s", markResult, nonce, i, base64.StdEncoding.EncodeToString(b))
		lines = append(lines, body+" "+crcHex(body)+"\n")
	}
	end := fmt.Sprintf("%s %s %d %s", markEnd, nonce, len(records), hex.EncodeToString(h.Sum(nil)))
	lines = append(lines, end+" "+crcHex(end)+"\n")
	return lines, nil
}

// WriteFrames writes records framed to w, copies times, one write per
// line.
func WriteFrames(w io.Writer, nonce string, records []Record, copies int) error {
	lines, err := EncodeFrames(nonce, records)
	if err != nil {
		return err
	}
	for range max(copies, 1) {
		for _, l := range lines {
			if _, err := io.WriteString(w, l); err != nil {
				return err
			}
		}
	}
	return nil
}

// Parser finds a job's framed records in console output. Feed it the
// console line by line; Done reports when a complete, consistent set has
// arrived.
type Parser struct {
	nonce   string
	records map[int][]byte
	count   int // from a valid END, -1 before
	sum     string
	begun   bool
	bad     int
	done    []Record
	err     error
}

// NewParser returns a parser for the frames of the job with nonce.
func NewParser(nonce string) *Parser {
	return &Parser{nonce: nonce, records: map[int][]byte{}, count: -1}
}

// Line feeds one console line (with or without its line ending). Kernel
// messages may precede a frame on the same line: the frame is looked for
// anywhere in it.
func (p *Parser) Line(line string) {
	line = strings.TrimRight(line, "\r\n")
	i := strings.Index(line, markAny)
	if i < 0 || p.done != nil {
		return
	}
	line = line[i:]
	f := strings.Fields(line)
	switch f[0] {
	case markBegin:
		if len(f) == 3 && f[1] == strconv.Itoa(JobVersion) && f[2] == p.nonce {
			p.begun = true
		}
	case markResult:
		// RESULT NONCE SEQ BASE64 CRC
		if len(f) != 5 || f[1] != p.nonce {
			p.bad++
			return
		}
		if crcHex(strings.Join(f[:4], " ")) != f[4] {
			p.bad++
			return
		}
		seq, err := strconv.Atoi(f[2])
		if err != nil || seq < 0 || seq > 1<<16 {
			p.bad++
			return
		}
		b, err := base64.StdEncoding.DecodeString(f[3])
		if err != nil {
			p.bad++
			return
		}
		p.records[seq] = b
	case markEnd:
		// END NONCE COUNT SHA256 CRC
		if len(f) != 5 || f[1] != p.nonce || crcHex(strings.Join(f[:4], " ")) != f[4] {
			p.bad++
			return
		}
		n, err := strconv.Atoi(f[2])
		if err != nil || n < 0 || n > 1<<16 {
			p.bad++
			return
		}
		p.count, p.sum = n, f[3]
	default:
		return
	}
	p.check()
}

// check completes the set when every record and a valid END are there.
func (p *Parser) check() {
	if p.count < 0 || len(p.records) < p.count {
		return
	}
	h := sha256.New()
	for i := range p.count {
		b, ok := p.records[i]
		if !ok {
			return
		}
		h.Write(b)
	}
	if hex.EncodeToString(h.Sum(nil)) != p.sum {
		// A valid-looking END of another set, or records garbled in a
		// way the CRC missed: wait for the next copy.
		p.err = fmt.Errorf("result set checksum mismatch")
		p.count = -1
		return
	}
	out := make([]Record, 0, p.count)
	for i := range p.count {
		var r Record
		dec := json.NewDecoder(bytes.NewReader(p.records[i]))
		if err := dec.Decode(&r); err != nil {
			p.err = fmt.Errorf("record %d: %w", i, err)
			p.count = -1
			return
		}
		out = append(out, r)
	}
	p.done, p.err = out, nil
}

// Done returns the records once a complete set has arrived.
func (p *Parser) Done() ([]Record, bool) { return p.done, p.done != nil }

// Begun reports whether the runner started answering.
func (p *Parser) Begun() bool { return p.begun }

// Garbled counts frame lines refused for a bad checksum or format.
func (p *Parser) Garbled() int { return p.bad }

// Err is the last inconsistency seen, if the set is not complete.
func (p *Parser) Err() error { return p.err }
