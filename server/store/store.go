// Package store is bpfarm's metadata database: programs, revisions, builds
// and tokens in SQLite (WAL, busy timeout, foreign keys), with the schema
// migrations of package migrations applied by goose on open.
//
// Blobs themselves live in a blob.Store; rows only name them by digest,
// and every blob is written before the row that names it.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"
	"github.com/pressly/goose/v3"

	"github.com/bpfarm/bpfarm/migrations"
)

// ErrNotFound is returned when a row does not exist.
var ErrNotFound = errors.New("not found")

// ErrInvalid is returned (wrapped, with the reason) for input the store
// refuses, such as a revision prefix too short or ambiguous.
var ErrInvalid = errors.New("invalid input")

// ErrConflict is returned when a row would violate a uniqueness rule.
var ErrConflict = errors.New("already exists")

// DB is the metadata database.
type DB struct {
	db *sql.DB
}

// Option configures Open.
type Option func(*options)

type options struct{ log *slog.Logger }

// WithLogger logs migrations to l instead of slog's default logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Open opens (creating it if needed) the SQLite database at path and
// applies every pending migration.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	dsn := fmt.Sprintf("file:%s?_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=on&_synchronous=NORMAL&_txlock=immediate", path)
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := migrate(ctx, db, o.log); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate database %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	sub, err := fs.Sub(migrations.FS, ".")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub,
		goose.WithLogger(gooseLogger{log}))
	if err != nil {
		return err
	}
	res, err := p.Up(ctx)
	for _, r := range res {
		log.Info("applied migration", "version", r.Source.Version, "path", r.Source.Path, "duration", r.Duration)
	}
	return err
}

type gooseLogger struct{ log *slog.Logger }

func (g gooseLogger) Printf(format string, v ...any) { g.log.Debug(fmt.Sprintf(format, v...)) }
func (g gooseLogger) Fatalf(format string, v ...any) { g.log.Error(fmt.Sprintf(format, v...)) }

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// Ping checks that the database answers.
func (d *DB) Ping(ctx context.Context) error { return d.db.PingContext(ctx) }

// SQL exposes the underlying handle to tests that seed or damage fixtures
// in bulk. Everything else asks the store's methods: no code outside
// package store but tests may call it (TestOnlyStoreSpeaksSQL in package
// server checks).
func (d *DB) SQL() *sql.DB { return d.db }

// tx runs fn in a transaction (BEGIN IMMEDIATE, see the DSN).
func (d *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

func nullTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time.UTC()
	return &v
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(...any) error }

// queryList runs a query and scans every row with scan; what names the
// list in errors ("list builds: ...").
func queryList[T any](ctx context.Context, db *sql.DB, what, q string, args []any, scan func(rowScanner) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
