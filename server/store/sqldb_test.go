package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bpfarm/bpfarm/server/fault"
)

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT * FROM t WHERE a = ? AND b = ?`, `SELECT * FROM t WHERE a = $1 AND b = $2`},
		{`SELECT '?', "a?b", ? -- what?
			FROM t /* ? */ WHERE x = ?`, `SELECT '?', "a?b", $1 -- what?
			FROM t /* ? */ WHERE x = $2`},
		{`SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
		{`SELECT ?1 + ?1, ?2, ?`, `SELECT $1 + $1, $2, $3`},
		{`LIKE ? ESCAPE '\'`, `LIKE $1 ESCAPE '\'`},
		{`SELECT ?, 'unterminated ?`, `SELECT $1, 'unterminated ?`},
	} {
		if got := rebind(tc.in); got != tc.want {
			t.Errorf("rebind(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestNormArgs(t *testing.T) {
	in := []any{true, "x", false, 3}
	out := normArgs(in)
	if out[0] != int64(1) || out[1] != "x" || out[2] != int64(0) || out[3] != 3 {
		t.Fatalf("normArgs: %v", out)
	}
	if in[0] != true {
		t.Fatal("normArgs changed its argument")
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{&pgconn.PgError{Code: "57P01"}, fault.ErrDatabaseUnavailable},
		{&pgconn.PgError{Code: "08006"}, fault.ErrDatabaseUnavailable},
		{&pgconn.PgError{Code: "53100"}, fault.ErrNoSpace},
		{&pgconn.PgError{Code: "23505"}, nil},
		{errors.New("syntax error"), nil},
	} {
		if got := fault.Sentinel(classify(tc.err)); got != tc.want {
			t.Errorf("classify(%v): sentinel %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{"sqlite:" + dir + "/a.db", dir + "/b.db", "sqlite://" + dir + "/c.db"} {
		db, err := Open(context.Background(), dsn, WithLogger(quiet))
		if err != nil {
			t.Fatalf("open %s: %v", dsn, err)
		}
		if db.Postgres() {
			t.Errorf("%s: opened as PostgreSQL", dsn)
		}
		db.Close()
	}
	for _, name := range []string{"a.db", "b.db", "c.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
	for dsn, want := range map[string]string{
		"mysql://u@h/db": `unknown scheme "mysql"`,
		"sqlite:":        "empty SQLite path",
	} {
		if _, err := Open(context.Background(), dsn); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("open %s: %v, want %q", dsn, err, want)
		}
	}
	// A password in the URL stays out of errors.
	_, err := Open(context.Background(), "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2", WithLogger(quiet))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("open with a password: %v", err)
	}
}
