// Package farmtest runs a bpfarm farm of real processes for tests and
// benchmarks: N `bpfarm serve --role api` and M `--role worker` processes
// (the built binary, each on its own loopback address and data directory)
// sharing one database, one blob store and one secret key file; or, with
// no roles asked for, one `bpfarm serve` process on the embedded default
// (SQLite and a local blob directory). Any process can be killed with
// SIGKILL and started again; their output is kept and shown when the test
// fails; everything is stopped and removed when the test ends. Linux only
// (process groups, parent-death signals, /proc).
//
// The database and the bucket are the caller's: testenv.Postgres and
// testenv.MinIO start real ones.
package farmtest
