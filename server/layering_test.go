package server_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/bpfarm/bpfarm"

// goList runs `go list` in the module's root with args.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// sqlPackages are the packages that speak SQL to a database.
var sqlPackages = regexp.MustCompile(`^(database/sql|github\.com/mattn/go-sqlite3|github\.com/jackc/pgx)(/|$)`)

// TestOnlyStoreSpeaksSQL: outside server/store no package imports
// database/sql or a driver, and no non-test file calls the store's raw
// handle (DB.SQL, kept for tests that seed fixtures in bulk).
func TestOnlyStoreSpeaksSQL(t *testing.T) {
	store := module + "/server/store"
	for _, line := range goList(t, "-f", `{{.ImportPath}} {{.Dir}} {{join .Imports " "}}`, "./...") {
		f := strings.Fields(line)
		pkg, dir := f[0], f[1]
		if pkg == store || strings.HasPrefix(pkg, store+"/") {
			continue
		}
		for _, imp := range f[2:] {
			if sqlPackages.MatchString(imp) {
				t.Errorf("%s imports %s: only %s speaks SQL", pkg, imp, store)
			}
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(src, []byte(".SQL()")) {
				t.Errorf("%s calls DB.SQL(): ask a store method instead", name)
			}
		}
	}
}

// TestServerDoesNotImportWeb: the web UI is a top-level room that calls
// the server's services; no package under server/ imports it back, even
// indirectly (cmd/bpfarm composes the two).
func TestServerDoesNotImportWeb(t *testing.T) {
	lines := goList(t, "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./server/...")
	if len(lines) < 5 {
		t.Fatalf("go list ./server/...: only %v", lines)
	}
	for _, line := range lines {
		f := strings.Fields(line)
		for _, dep := range f[1:] {
			if dep == module+"/web" || strings.HasPrefix(dep, module+"/web/") {
				t.Errorf("%s imports %s", f[0], dep)
			}
		}
	}
}
