-- +goose Up
-- A program whose kernel lacks a BPF feature it needs (a map type, program
-- type, attach type, helper or kfunc) is 'unsupported', and so is an
-- artifact with such a program. SQLite can't change a CHECK constraint in
-- place: the table is rebuilt (SQLite's documented procedure), keeping the
-- verifications that reference it, which the DROP would cascade away.
CREATE TEMP TABLE saved_verifications AS SELECT * FROM verifications;

CREATE TABLE artifacts_new (
    id              INTEGER PRIMARY KEY,
    build_id        INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    kernel_id       INTEGER NOT NULL REFERENCES kernels(id) ON DELETE CASCADE,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'error')),
    status          TEXT NOT NULL DEFAULT '' CHECK (status IN ('', 'ok', 'poisoned', 'unsupported', 'failed')),
    error           TEXT NOT NULL DEFAULT '',
    report          TEXT NOT NULL DEFAULT '',
    minbtf_blob     TEXT NOT NULL DEFAULT '',
    minbtf_size     INTEGER NOT NULL DEFAULT 0,
    relocated_blob  TEXT NOT NULL DEFAULT '',
    relocated_size  INTEGER NOT NULL DEFAULT 0,
    manifest_blob   TEXT NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    UNIQUE (build_id, kernel_id)
);
INSERT INTO artifacts_new (id, build_id, kernel_id, state, status, error, report, minbtf_blob, minbtf_size,
                           relocated_blob, relocated_size, manifest_blob, attempts, created_at, finished_at)
    SELECT id, build_id, kernel_id, state, status, error, report, minbtf_blob, minbtf_size,
           relocated_blob, relocated_size, manifest_blob, attempts, created_at, finished_at FROM artifacts;
DROP TABLE artifacts;
ALTER TABLE artifacts_new RENAME TO artifacts;
CREATE INDEX artifacts_state ON artifacts(state, id);
CREATE INDEX artifacts_kernel ON artifacts(kernel_id);
CREATE INDEX artifacts_build_summary ON artifacts(build_id, state, status, kernel_id);
CREATE INDEX artifacts_kernel_summary ON artifacts(kernel_id, state, status, build_id);

INSERT INTO verifications SELECT * FROM saved_verifications;
DROP TABLE saved_verifications;

-- +goose Down
-- Unsupported artifacts can't be represented before this migration: they
-- are relocated again.
UPDATE artifacts SET state = 'queued', status = '' WHERE status = 'unsupported';
