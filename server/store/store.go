// Package store is bpfarm's metadata database: programs, revisions, builds
// and tokens, in SQLite (the embedded default: WAL, busy timeout, foreign
// keys) or PostgreSQL (a shared database for replicas), with the schema
// migrations of package migrations applied by goose on open.
//
// Both dialects run the same SQL: queries are written with ? placeholders,
// new ids come from RETURNING, booleans are integers, and what only one
// dialect can say sits behind a store method that checks DB.Postgres. The
// migrations are translated for PostgreSQL (see translate.go).
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
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "github.com/mattn/go-sqlite3"    // database/sql driver "sqlite3"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
	db *sqlDB
	// postgres is set when the database is PostgreSQL: store files branch
	// on it for what only one dialect can say (FOR UPDATE SKIP LOCKED,
	// LISTEN/NOTIFY).
	postgres bool
	// url is the PostgreSQL connection URL (for a listening connection of
	// its own); empty for SQLite.
	url string
	// notes are the wake-ups of Notify and Changed.
	notes  notes
	logger *slog.Logger
}

// Option configures Open.
type Option func(*options)

type options struct {
	log      *slog.Logger
	maxConns int
}

// WithLogger logs migrations to l instead of slog's default logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMaxConns bounds the connections to a PostgreSQL server (default
// DefaultMaxConns). SQLite ignores it.
func WithMaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// DefaultMaxConns is the default bound on a process's connections to a
// PostgreSQL server: a few replicas fit in its default max_connections
// (100).
const DefaultMaxConns = 16

// Open opens the database named by dsn and applies every pending
// migration:
//   - sqlite:PATH, or a bare PATH: the SQLite database file PATH, created
//     if needed;
//   - postgres://... or postgresql://...: a PostgreSQL database (a
//     libpq-style URL, as pgx reads it).
func Open(ctx context.Context, dsn string, opts ...Option) (*DB, error) {
	o := options{log: slog.Default(), maxConns: DefaultMaxConns}
	for _, opt := range opts {
		opt(&o)
	}
	d, name, err := openDSN(dsn, o)
	if err != nil {
		return nil, err
	}
	if err := d.db.PingContext(ctx); err != nil {
		d.db.Close()
		return nil, fmt.Errorf("open database %s: %w", name, classify(err))
	}
	if err := d.migrate(ctx, o.log); err != nil {
		d.db.Close()
		return nil, fmt.Errorf("migrate database %s: %w", name, classify(err))
	}
	d.logger = o.log
	if d.postgres {
		if err := d.listen(ctx); err != nil {
			d.db.Close()
			return nil, fmt.Errorf("open database %s: %w", name, err)
		}
	}
	return d, nil
}

// openDSN opens (without connecting) the database dsn names; name is how
// errors name it (a PostgreSQL URL without its password).
func openDSN(dsn string, o options) (d *DB, name string, err error) {
	switch scheme, rest, _ := strings.Cut(dsn, ":"); {
	case scheme == "postgres" || scheme == "postgresql":
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, "", fmt.Errorf("database URL: %w", errors.Unwrap(err)) // the error quotes the URL: not its password
		}
		name = u.Redacted()
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, "", fmt.Errorf("open database %s: %w", name, err)
		}
		db.SetMaxOpenConns(o.maxConns)
		db.SetMaxIdleConns(max(o.maxConns/2, 2))
		db.SetConnMaxLifetime(30 * time.Minute) // follow failovers and DNS changes
		db.SetConnMaxIdleTime(5 * time.Minute)
		return &DB{db: &sqlDB{db: db, postgres: true}, postgres: true, url: dsn}, name, nil
	case scheme == "sqlite":
		dsn = strings.TrimPrefix(rest, "//")
	case len(scheme) > 1 && !strings.ContainsAny(scheme, `/\.`) && strings.HasPrefix(rest, "//"):
		return nil, "", fmt.Errorf("database URL %s:...: unknown scheme %q (want sqlite:PATH or postgres://...)", scheme, scheme)
	}
	if dsn == "" {
		return nil, "", fmt.Errorf("database URL: empty SQLite path")
	}
	db, err := sql.Open("sqlite3", fmt.Sprintf(
		"file:%s?_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=on&_synchronous=NORMAL&_txlock=immediate", dsn))
	if err != nil {
		return nil, "", fmt.Errorf("open database %s: %w", dsn, err)
	}
	return &DB{db: &sqlDB{db: db}}, dsn, nil
}

// Collector returns the metrics of the database's connection pool
// (go_sql_*{db_name="metadata"}: open, in use and idle connections, waits
// for one), for registering with a server's registry.
func (d *DB) Collector() prometheus.Collector {
	return collectors.NewDBStatsCollector(d.db.db, "metadata")
}

// Postgres reports whether the database is PostgreSQL (else SQLite).
func (d *DB) Postgres() bool { return d.postgres }

func (d *DB) migrate(ctx context.Context, log *slog.Logger) error {
	sub, err := fs.Sub(migrations.FS, ".")
	if err != nil {
		return err
	}
	dialect := goose.DialectSQLite3
	popts := []goose.ProviderOption{goose.WithLogger(gooseLogger{log})}
	if d.postgres {
		dialect = goose.DialectPostgres
		// Replicas starting together migrate one at a time.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return err
		}
		popts = append(popts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, d.db.db, dialectFS{fsys: sub, postgres: d.postgres}, popts...)
	if err != nil {
		return err
	}
	res, err := p.Up(ctx)
	for _, r := range res {
		log.Info("applied migration", "version", r.Source.Version, "path", r.Source.Path, "duration", r.Duration)
	}
	if err != nil {
		return err
	}
	if d.postgres && len(res) > 0 {
		return d.resyncIdentities(ctx)
	}
	return nil
}

// resyncIdentities moves every identity sequence past the largest id of
// its column: migrations that copy rows with their ids (table rebuilds)
// leave the sequence behind. A sequence never moves back.
func (d *DB) resyncIdentities(ctx context.Context) error {
	cols, err := queryList(ctx, d.db, "identity columns", `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name`, nil,
		func(r rowScanner) ([2]string, error) {
			var c [2]string
			return c, r.Scan(&c[0], &c[1])
		})
	if err != nil {
		return err
	}
	for _, c := range cols {
		table, col := quoteIdent(c[0]), quoteIdent(c[1])
		err := d.tx(ctx, func(tx *sqlTx) error {
			// No insert takes an id while the sequence moves.
			if _, err := tx.ExecContext(ctx, `LOCK TABLE `+table+` IN EXCLUSIVE MODE`); err != nil {
				return err
			}
			var (
				seq    string
				maxID  sql.NullInt64
				last   int64
				called bool
			)
			if err := tx.QueryRowContext(ctx, `SELECT pg_get_serial_sequence(?, ?)`, table, c[1]).Scan(&seq); err != nil {
				return err
			}
			if err := tx.QueryRowContext(ctx, `SELECT MAX(`+col+`) FROM `+table).Scan(&maxID); err != nil {
				return err
			}
			if err := tx.QueryRowContext(ctx, `SELECT last_value, is_called FROM `+seq).Scan(&last, &called); err != nil {
				return err
			}
			if !maxID.Valid || maxID.Int64 < last || (maxID.Int64 == last && called) {
				return nil
			}
			_, err := tx.ExecContext(ctx, `SELECT setval(?, ?, true)`, seq, maxID.Int64)
			return err
		})
		if err != nil {
			return fmt.Errorf("resync identity %s.%s: %w", c[0], c[1], err)
		}
	}
	return nil
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

type gooseLogger struct{ log *slog.Logger }

func (g gooseLogger) Printf(format string, v ...any) { g.log.Debug(fmt.Sprintf(format, v...)) }
func (g gooseLogger) Fatalf(format string, v ...any) { g.log.Error(fmt.Sprintf(format, v...)) }

// Close closes the database.
func (d *DB) Close() error {
	d.stopListening()
	return d.db.Close()
}

// log returns the store's logger.
func (d *DB) log() *slog.Logger {
	if d.logger == nil {
		return slog.Default()
	}
	return d.logger
}

// Ping checks that the database answers.
func (d *DB) Ping(ctx context.Context) error { return d.db.PingContext(ctx) }

// SQL exposes the underlying handle to tests that seed or damage fixtures
// in bulk. Everything else asks the store's methods: no code outside
// package store but tests may call it (TestOnlyStoreSpeaksSQL in package
// server checks). Its queries are not rebound: on PostgreSQL they need $n
// placeholders.
func (d *DB) SQL() *sql.DB { return d.db.db }

// maxTxAttempts bounds how often tx runs a transaction that PostgreSQL
// failed for a concurrent one.
const maxTxAttempts = 5

// tx runs fn in a transaction. On SQLite it is BEGIN IMMEDIATE (see the
// DSN): one writer at a time. On PostgreSQL it is READ COMMITTED, and fn
// runs again when the transaction failed because of a concurrent one (a
// serialization failure, a deadlock, or a unique violation of a row
// another transaction inserted since fn looked): fn must set whatever it
// reports from scratch on every run.
func (d *DB) tx(ctx context.Context, fn func(*sqlTx) error) error {
	for attempt := 1; ; attempt++ {
		err := d.tx1(ctx, fn)
		if err == nil || !d.postgres || attempt == maxTxAttempts || !concurrencyFailure(err) || ctx.Err() != nil {
			return classify(err)
		}
	}
}

func (d *DB) tx1(ctx context.Context, fn func(*sqlTx) error) error {
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

// rowScanner is a *sqlRow, *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(...any) error }

// queryList runs a query and scans every row with scan; what names the
// list in errors ("list builds: ...").
func queryList[T any](ctx context.Context, db querier, what, q string, args []any, scan func(rowScanner) (T, error)) ([]T, error) {
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

// skipLocked is the locking clause of a claim's row-picking subquery: on
// PostgreSQL, FOR UPDATE SKIP LOCKED (of tables, when given), so that
// concurrent claims pick different rows instead of queueing for one; on
// SQLite nothing (one writer at a time).
func (d *DB) skipLocked(tables ...string) string {
	if !d.postgres {
		return ""
	}
	if len(tables) > 0 {
		return " FOR UPDATE OF " + strings.Join(tables, ", ") + " SKIP LOCKED"
	}
	return " FOR UPDATE SKIP LOCKED"
}
