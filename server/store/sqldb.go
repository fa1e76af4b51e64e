package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"

	"github.com/bpfarm/bpfarm/server/fault"
)

// sqlDB is the store's handle on the database: a *sql.DB whose queries are
// written once, in the SQL both dialects share, with ? placeholders. On
// PostgreSQL every query is rebound to $1, $2, ... (see rebind) on its way
// to the driver. Arguments are normalised for both dialects (see args):
// booleans are stored as the integers 0 and 1.
type sqlDB struct {
	db       *sql.DB
	postgres bool
}

// querier is what sqlDB and sqlTx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sqlRow
}

var (
	_ querier = (*sqlDB)(nil)
	_ querier = (*sqlTx)(nil)
)

// ExecContext is (*sql.DB).ExecContext on the rebound query.
func (d *sqlDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := d.db.ExecContext(ctx, d.query(query), normArgs(args)...)
	return res, classify(err)
}

// QueryContext is (*sql.DB).QueryContext on the rebound query.
func (d *sqlDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := d.db.QueryContext(ctx, d.query(query), normArgs(args)...)
	return rows, classify(err)
}

// QueryRowContext is (*sql.DB).QueryRowContext on the rebound query.
func (d *sqlDB) QueryRowContext(ctx context.Context, query string, args ...any) *sqlRow {
	return &sqlRow{d.db.QueryRowContext(ctx, d.query(query), normArgs(args)...)}
}

// BeginTx starts a transaction whose queries are rebound like d's.
func (d *sqlDB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sqlTx, error) {
	tx, err := d.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, classify(err)
	}
	return &sqlTx{tx: tx, postgres: d.postgres}, nil
}

// PingContext is (*sql.DB).PingContext.
func (d *sqlDB) PingContext(ctx context.Context) error { return classify(d.db.PingContext(ctx)) }

// Close is (*sql.DB).Close.
func (d *sqlDB) Close() error { return d.db.Close() }

func (d *sqlDB) query(q string) string {
	if d.postgres {
		return rebind(q)
	}
	return q
}

// sqlTx is a transaction of a sqlDB: the same rebinding.
type sqlTx struct {
	tx       *sql.Tx
	postgres bool
}

// ExecContext is (*sql.Tx).ExecContext on the rebound query.
func (t *sqlTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := t.tx.ExecContext(ctx, t.query(query), normArgs(args)...)
	return res, classify(err)
}

// QueryContext is (*sql.Tx).QueryContext on the rebound query.
func (t *sqlTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := t.tx.QueryContext(ctx, t.query(query), normArgs(args)...)
	return rows, classify(err)
}

// QueryRowContext is (*sql.Tx).QueryRowContext on the rebound query.
func (t *sqlTx) QueryRowContext(ctx context.Context, query string, args ...any) *sqlRow {
	return &sqlRow{t.tx.QueryRowContext(ctx, t.query(query), normArgs(args)...)}
}

// Commit is (*sql.Tx).Commit.
func (t *sqlTx) Commit() error { return classify(t.tx.Commit()) }

// Rollback is (*sql.Tx).Rollback.
func (t *sqlTx) Rollback() error { return t.tx.Rollback() }

func (t *sqlTx) query(q string) string {
	if t.postgres {
		return rebind(q)
	}
	return q
}

// normArgs stores booleans as the integers 0 and 1 (the schema's booleans
// are INTEGER columns: PostgreSQL refuses a bool for them, SQLite converts
// it the same way).
func normArgs(args []any) []any {
	var out []any // a copy, made on the first bool: the caller's slice is left alone
	for i, a := range args {
		if b, ok := a.(bool); ok {
			if out == nil {
				out = append([]any(nil), args...)
			}
			out[i] = boolInt(b)
		}
	}
	if out == nil {
		return args
	}
	return out
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// rebind rewrites SQLite's placeholders into PostgreSQL's: ? becomes $n, n
// counting from one more than the largest number used so far (SQLite's
// rule), and ?NNN becomes $NNN. Placeholders inside string literals,
// quoted identifiers and comments are left alone.
func rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := skipQuoted(q, i)
			b.WriteString(q[i:j])
			i = j
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			b.WriteString(q[i : i+j])
			i += j
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j := strings.Index(q[i+2:], "*/")
			end := len(q)
			if j >= 0 {
				end = i + 2 + j + 2
			}
			b.WriteString(q[i:end])
			i = end
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			if j > i+1 {
				v, err := strconv.Atoi(q[i+1 : j])
				if err == nil && v > n {
					n = v
				}
				b.WriteByte('$')
				b.WriteString(q[i+1 : j])
			} else {
				n++
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(n))
			}
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// skipQuoted returns the index just past the quoted string or identifier
// starting at q[i] (a doubled quote is an escaped quote).
func skipQuoted(q string, i int) int {
	quote := q[i]
	for j := i + 1; j < len(q); j++ {
		if q[j] == quote {
			if j+1 < len(q) && q[j+1] == quote {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(q)
}

// sqlRow is a *sql.Row whose Scan classifies errors (see classify).
type sqlRow struct{ row *sql.Row }

// Scan is (*sql.Row).Scan.
func (r *sqlRow) Scan(dest ...any) error { return classify(r.row.Scan(dest...)) }

// Err is (*sql.Row).Err.
func (r *sqlRow) Err() error { return classify(r.row.Err()) }

// classify marks the errors of a database that does not answer (refused or
// lost connections, a server shutting down, a file that can't be opened)
// with fault.ErrDatabaseUnavailable, and a full disk with fault.ErrNoSpace;
// it returns other errors as they are.
func classify(err error) error {
	if err == nil || errors.Is(err, sql.ErrNoRows) || fault.Sentinel(err) == fault.ErrDatabaseUnavailable {
		return err
	}
	var (
		pgErr   *pgconn.PgError
		connErr *pgconn.ConnectError
		netErr  net.Error
		liteErr sqlite3.Error
	)
	switch {
	case errors.As(err, &pgErr):
		switch {
		case pgErr.Code == "53100": // disk_full
			return markFault(fault.ErrNoSpace, err)
		case strings.HasPrefix(pgErr.Code, "08"), // connection_exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, cannot connect now
			pgErr.Code == "53300": // too_many_connections
			return markFault(fault.ErrDatabaseUnavailable, err)
		}
		return err
	case errors.As(err, &liteErr):
		switch liteErr.Code {
		case sqlite3.ErrFull:
			return markFault(fault.ErrNoSpace, err)
		case sqlite3.ErrCantOpen, sqlite3.ErrIoErr, sqlite3.ErrNotADB, sqlite3.ErrCorrupt:
			return markFault(fault.ErrDatabaseUnavailable, err)
		}
		return err
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &connErr), errors.As(err, &netErr), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return markFault(fault.ErrDatabaseUnavailable, err)
	}
	return err
}

// concurrencyFailure reports whether a PostgreSQL transaction failed
// because of a concurrent one: trying it again may succeed.
func concurrencyFailure(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", "40P01", "23505": // serialization_failure, deadlock_detected, unique_violation
		return true
	}
	return false
}

// markFault marks err with the fault sentinel. Unlike fault.Wrap it does
// so even when err would classify otherwise by itself (a refused TCP
// connection reads as object storage, not as the database).
func markFault(sentinel, err error) error { return fmt.Errorf("%w: %w", sentinel, err) }
