// Package fuzzseed writes and reads Go fuzzing corpus files
// (testdata/fuzz/FuzzX/NAME), so that fuzz targets can be seeded from real
// objects checked in once instead of compiling them in every fuzz worker.
package fuzzseed

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const header = "go test fuzz v1\n"

// Write stores data as the corpus entry name of fuzz target target
// (testdata/fuzz/TARGET/NAME in the current directory).
func Write(target, name string, data []byte) error {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	body := header + "[]byte(" + strconv.Quote(string(data)) + ")\n"
	return os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
}

// Read returns the []byte values of fuzz target target's checked-in corpus
// entries that hold a single []byte, by file name.
func Read(target string) (map[string][]byte, error) {
	dir := filepath.Join("testdata", "fuzz", target)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(b, []byte(header)) {
			return nil, fmt.Errorf("%s: not a corpus file", e.Name())
		}
		sc := bufio.NewScanner(bytes.NewReader(b[len(header):]))
		sc.Buffer(nil, 64<<20)
		if !sc.Scan() {
			return nil, fmt.Errorf("%s: empty corpus file", e.Name())
		}
		line := strings.TrimSpace(sc.Text())
		q, ok := strings.CutPrefix(line, "[]byte(")
		if !ok || !strings.HasSuffix(q, ")") {
			continue // not a single []byte
		}
		s, err := strconv.Unquote(strings.TrimSuffix(q, ")"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out[e.Name()] = []byte(s)
	}
	return out, nil
}
