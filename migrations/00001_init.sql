-- +goose Up
CREATE TABLE programs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

-- A revision is one source bundle of a program; digest is the canonical
-- bundle digest (the revision id users see).
CREATE TABLE revisions (
    id          INTEGER PRIMARY KEY,
    program_id  INTEGER NOT NULL REFERENCES programs(id) ON DELETE CASCADE,
    digest      TEXT NOT NULL,
    entry       TEXT NOT NULL,
    bundle_blob TEXT NOT NULL,
    size        INTEGER NOT NULL,
    files       INTEGER NOT NULL,
    pushed_by   TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMP NOT NULL,
    UNIQUE (program_id, digest)
);
CREATE INDEX revisions_digest ON revisions(digest);

-- A build compiles one revision for one arch with one set of user flags.
-- cache_key covers every input (bundle, entry, arch, flags, compiler,
-- header digests): builds with equal keys have equal outputs.
CREATE TABLE builds (
    id           INTEGER PRIMARY KEY,
    revision_id  INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,
    arch         TEXT NOT NULL,
    flags        TEXT NOT NULL DEFAULT '[]',
    cache_key    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    error        TEXT NOT NULL DEFAULT '',
    error_kind   TEXT NOT NULL DEFAULT '' CHECK (error_kind IN ('', 'user', 'internal')),
    diagnostics  TEXT NOT NULL DEFAULT '[]',
    inspection   TEXT NOT NULL DEFAULT '',
    object_blob  TEXT NOT NULL DEFAULT '',
    object_size  INTEGER NOT NULL DEFAULT 0,
    log_blob     TEXT NOT NULL DEFAULT '',
    compiler     TEXT NOT NULL DEFAULT '',
    used_pch     INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    cached_from  INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    created_at   TIMESTAMP NOT NULL,
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP,
    UNIQUE (revision_id, arch, flags)
);
CREATE INDEX builds_state ON builds(state, id);
CREATE INDEX builds_cache_key ON builds(cache_key);

CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'reader')),
    hash         TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at   TIMESTAMP
);

-- +goose Down
DROP TABLE tokens;
DROP TABLE builds;
DROP TABLE revisions;
DROP TABLE programs;
