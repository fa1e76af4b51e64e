// Package storetest runs tests against every database the store speaks:
// SQLite, and a real PostgreSQL started by internal/testenv.
package storetest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/bpfarm/bpfarm/internal/testenv"
	"github.com/bpfarm/bpfarm/server/store"
)

// Each runs fn as the subtests "sqlite" and "postgres", each with a new,
// migrated, empty store that is closed when the subtest ends. Without
// PostgreSQL the postgres subtest is skipped, or fails when
// testenv.Strict.
func Each(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, name := range Backends {
		t.Run(name, func(t *testing.T) { fn(t, Open(t, name)) })
	}
}

// Backends names the databases Each runs on.
var Backends = []string{"sqlite", "postgres"}

// URL returns the database URL of a new, empty database of backend
// ("sqlite" or "postgres") for the test.
func URL(t testing.TB, backend string) string {
	t.Helper()
	switch backend {
	case "sqlite":
		return "sqlite:" + filepath.Join(t.TempDir(), "bpfarm.db")
	case "postgres":
		return testenv.Postgres(t)
	}
	t.Fatalf("storetest: unknown backend %q", backend)
	return ""
}

// MigratedURL is URL for a database the store's migrations were applied
// to. On PostgreSQL it is a copy of a template database migrated once per
// test binary: faster than migrating each one.
func MigratedURL(t testing.TB, backend string) string {
	t.Helper()
	switch backend {
	case "sqlite":
		return URL(t, backend)
	case "postgres":
		return testenv.PostgresTemplate(t, "store", func(url string) error {
			db, err := store.Open(context.Background(), url, store.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				return err
			}
			return db.Close()
		})
	}
	t.Fatalf("storetest: unknown backend %q", backend)
	return ""
}

// Open opens a new, migrated, empty store of backend for the test; it is
// closed when the test ends.
func Open(t testing.TB, backend string) *store.DB {
	t.Helper()
	return OpenURL(t, MigratedURL(t, backend))
}

// OpenURL opens the store at url for the test; it is closed when the test
// ends.
func OpenURL(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url, store.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Pair opens a new store of backend and returns two handles on it, as two
// processes (replicas) would hold: on PostgreSQL two separate handles, so
// that what crosses between them crosses through the server (LISTEN/NOTIFY);
// on SQLite, where one process owns the database, the same handle twice.
func Pair(t testing.TB, backend string) (db, other *store.DB) {
	t.Helper()
	url := URL(t, backend)
	db = OpenURL(t, url)
	if backend != "postgres" {
		return db, db
	}
	return db, OpenURL(t, url)
}
