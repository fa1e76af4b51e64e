package web

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/bpfarm/bpfarm/bpfsrc"
)

// lcs is the length of a longest common subsequence (the reference a
// shortest edit script must match: edits = len(a)+len(b)-2*lcs).
func lcs(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func checkScript(t *testing.T, a, b []string, es []edit) {
	t.Helper()
	var ga, gb []string
	changes := 0
	for _, e := range es {
		switch e.Op {
		case opEqual:
			ga, gb = append(ga, e.Text), append(gb, e.Text)
			if a[e.A-1] != e.Text || b[e.B-1] != e.Text {
				t.Fatalf("equal line numbers wrong: %+v", e)
			}
		case opDelete:
			ga = append(ga, e.Text)
			changes++
			if a[e.A-1] != e.Text {
				t.Fatalf("delete line number wrong: %+v", e)
			}
		case opInsert:
			gb = append(gb, e.Text)
			changes++
			if b[e.B-1] != e.Text {
				t.Fatalf("insert line number wrong: %+v", e)
			}
		}
	}
	if strings.Join(ga, "\n") != strings.Join(a, "\n") || strings.Join(gb, "\n") != strings.Join(b, "\n") {
		t.Fatalf("script does not turn %q into %q: %+v", a, b, es)
	}
	if want := len(a) + len(b) - 2*lcs(a, b); changes != want {
		t.Fatalf("%d changes for %q → %q, shortest is %d", changes, a, b, want)
	}
}

func TestDiffLinesRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	gen := func() []string {
		n := rng.IntN(25)
		out := make([]string, n)
		for i := range out {
			out[i] = string(rune('a' + rng.IntN(4)))
		}
		return out
	}
	for i := 0; i < 3000; i++ {
		a, b := gen(), gen()
		checkScript(t, a, b, diffLines(a, b))
	}
	checkScript(t, nil, []string{"x"}, diffLines(nil, []string{"x"}))
	checkScript(t, []string{"x"}, nil, diffLines([]string{"x"}, nil))
}

func TestUnifiedHunks(t *testing.T) {
	var a, b []string
	for i := 1; i <= 30; i++ {
		a = append(a, fmt.Sprintf("line %d", i))
	}
	b = append(b, a...)
	b[2] = "changed 3"                                        // near the top
	b = append(b[:20], append([]string{"new"}, b[20:]...)...) // after line 20
	hs := hunks(diffLines(a, b), 3)
	if len(hs) != 2 {
		t.Fatalf("%d hunks, want 2: %+v", len(hs), hs)
	}
	if hs[0].Header != "@@ -1,6 +1,6 @@" || hs[1].Header != "@@ -18,6 +18,7 @@" {
		t.Fatalf("headers %q %q", hs[0].Header, hs[1].Header)
	}
	// Close changes share a hunk.
	b2 := append([]string(nil), a...)
	b2[9], b2[14] = "x", "y"
	if hs := hunks(diffLines(a, b2), 3); len(hs) != 1 || hs[0].Header != "@@ -7,12 +7,12 @@" {
		t.Fatalf("merged hunk: %+v", hs)
	}
	// An added file.
	if hs := hunks(diffLines(nil, []string{"a", "b"}), 3); len(hs) != 1 || hs[0].Header != "@@ -0,0 +1,2 @@" {
		t.Fatalf("added file: %+v", hs)
	}
}

func TestDiffBundles(t *testing.T) {
	mk := func(files ...string) *bpfsrc.Bundle {
		var fs []bpfsrc.File
		for i := 0; i < len(files); i += 2 {
			fs = append(fs, bpfsrc.File{Name: files[i], Data: []byte(files[i+1])})
		}
		b, err := bpfsrc.New("p.bpf.c", fs, bpfsrc.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := mk("p.bpf.c", "int a;\nint b;\n", "old.h", "x\n", "same.h", "s\n")
	b := mk("p.bpf.c", "int a;\nint c;\n", "new.h", "y\n", "same.h", "s\n", "blob.bin", "\x00\x01")
	files, unchanged := diffBundles(a, b)
	got := map[string]string{}
	for _, f := range files {
		got[f.Name] = fmt.Sprintf("%s +%d -%d", f.Change, f.Added, f.Removed)
	}
	want := map[string]string{"p.bpf.c": "modified +1 -1", "old.h": "removed +0 -1", "new.h": "added +1 -0", "blob.bin": "binary +0 -0"}
	if unchanged != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("diff: %v (unchanged %d), want %v", got, unchanged, want)
	}
}

func TestDiffLarge(t *testing.T) {
	// Completely different large files fall back to a replacement, still
	// a correct script.
	var a, b []string
	for i := 0; i < 3000; i++ {
		a = append(a, fmt.Sprint("a", i))
		b = append(b, fmt.Sprint("b", i))
	}
	es := diffLines(a, b)
	if len(es) != 6000 {
		t.Fatalf("%d edits", len(es))
	}
}
