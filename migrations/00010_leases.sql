-- +goose Up
-- Jobs with leases (issue 11). Builds, relocations (artifacts) and
-- verifications are claimed by a worker with a lease: lease_owner names the
-- worker, lease_expires is when the lease runs out unless the worker's
-- heartbeat renews it. A running job whose lease ran out is claimed again
-- by any worker. not_before delays a job that failed for an infrastructure
-- reason (storage, disk, timeout, internal): it is retried with backoff.
--
-- Build failures are 'user' (the source is wrong) or 'infra' (the farm
-- failed): the old kind 'internal' becomes 'infra'. SQLite can't change a
-- CHECK constraint in place, so builds is rebuilt (SQLite's documented
-- procedure). Dropping builds cascades to artifacts and verifications: both
-- are kept aside and put back.
CREATE TEMP TABLE keep_artifacts AS SELECT * FROM artifacts;
CREATE TEMP TABLE keep_verifications AS SELECT * FROM verifications;

CREATE TABLE builds_new (
    id            INTEGER PRIMARY KEY,
    revision_id   INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,
    arch          TEXT NOT NULL,
    flags         TEXT NOT NULL DEFAULT '[]',
    cache_key     TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    error         TEXT NOT NULL DEFAULT '',
    error_kind    TEXT NOT NULL DEFAULT '' CHECK (error_kind IN ('', 'user', 'infra')),
    diagnostics   TEXT NOT NULL DEFAULT '[]',
    inspection    TEXT NOT NULL DEFAULT '',
    object_blob   TEXT NOT NULL DEFAULT '',
    object_size   INTEGER NOT NULL DEFAULT 0,
    log_blob      TEXT NOT NULL DEFAULT '',
    compiler      TEXT NOT NULL DEFAULT '',
    used_pch      INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    cached_from   INTEGER REFERENCES builds_new(id) ON DELETE SET NULL,
    created_at    TIMESTAMP NOT NULL,
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP,
    kernel_id     INTEGER REFERENCES kernels(id) ON DELETE CASCADE,
    header_set    TEXT NOT NULL DEFAULT '',
    lease_owner   TEXT NOT NULL DEFAULT '',
    lease_expires TIMESTAMP,
    not_before    TIMESTAMP
);
INSERT INTO builds_new (id, revision_id, arch, flags, cache_key, state, error, error_kind, diagnostics, inspection,
                        object_blob, object_size, log_blob, compiler, used_pch, attempts, cached_from, created_at,
                        started_at, finished_at, kernel_id, header_set)
    SELECT id, revision_id, arch, flags, cache_key, state, error,
           CASE WHEN error_kind = 'internal' THEN 'infra' ELSE error_kind END,
           diagnostics, inspection, object_blob, object_size, log_blob, compiler, used_pch, attempts, cached_from,
           created_at, started_at, finished_at, kernel_id, header_set
    FROM builds ORDER BY id;
DROP TABLE builds;
ALTER TABLE builds_new RENAME TO builds;
CREATE UNIQUE INDEX builds_identity ON builds(revision_id, arch, flags, COALESCE(kernel_id, 0));
CREATE INDEX builds_state ON builds(state, id);
CREATE INDEX builds_cache_key ON builds(cache_key);
CREATE INDEX builds_created ON builds(created_at);

DELETE FROM verifications;
DELETE FROM artifacts;
ALTER TABLE artifacts ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN lease_expires TIMESTAMP;
ALTER TABLE artifacts ADD COLUMN not_before TIMESTAMP;
ALTER TABLE verifications ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE verifications ADD COLUMN lease_expires TIMESTAMP;
ALTER TABLE verifications ADD COLUMN not_before TIMESTAMP;
INSERT INTO artifacts (id, build_id, kernel_id, state, status, error, report, minbtf_blob, minbtf_size,
                       relocated_blob, relocated_size, manifest_blob, attempts, created_at, finished_at)
    SELECT id, build_id, kernel_id, state, status, error, report, minbtf_blob, minbtf_size,
           relocated_blob, relocated_size, manifest_blob, attempts, created_at, finished_at
    FROM keep_artifacts ORDER BY id;
INSERT INTO verifications (id, artifact_id, kernel_image, state, result, reason, programs, release, accel, runner,
                           console_tail, console_blob, boot_ms, duration_ms, attempts, created_at, started_at, finished_at)
    SELECT id, artifact_id, kernel_image, state, result, reason, programs, release, accel, runner,
           console_tail, console_blob, boot_ms, duration_ms, attempts, created_at, started_at, finished_at
    FROM keep_verifications ORDER BY id;
DROP TABLE keep_verifications;
DROP TABLE keep_artifacts;

-- +goose Down
UPDATE builds SET error_kind = '' WHERE error_kind = 'infra';
