-- +goose Up
-- Hosts run bpfarm-agent: they register (idempotent by name), report the
-- state of each program they run, and long-poll their desired state.
CREATE TABLE hosts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    host_id       TEXT NOT NULL DEFAULT '',
    hostname      TEXT NOT NULL DEFAULT '',
    kernel        TEXT NOT NULL,           -- DISTRO/VERSION/ARCH/RELEASE
    build         TEXT NOT NULL DEFAULT '', -- uname -v
    labels        TEXT NOT NULL DEFAULT '{}',
    has_btf       INTEGER NOT NULL DEFAULT 0,
    agent_version TEXT NOT NULL DEFAULT '',
    registered_by TEXT NOT NULL DEFAULT '',
    first_seen    TIMESTAMP NOT NULL,
    last_seen     TIMESTAMP NOT NULL,
    reported_at   TIMESTAMP,
    state         TEXT NOT NULL DEFAULT '[]' -- the agent's last report: []HostProgram
);

-- An assignment runs a program on every host whose labels include all of
-- the selector's pairs (an empty selector matches every host), at a pinned
-- revision or else the latest one with an artifact for the host's kernel.
CREATE TABLE assignments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- ids are never reused: unassign ID stays unambiguous
    program_id  INTEGER NOT NULL REFERENCES programs(id) ON DELETE CASCADE,
    selector    TEXT NOT NULL DEFAULT '{}',
    revision    TEXT NOT NULL DEFAULT '',  -- full digest when pinned
    options     TEXT NOT NULL DEFAULT '{}', -- api.LoadOptions
    created_by  TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX assignments_program ON assignments(program_id);

-- +goose Down
DROP TABLE assignments;
DROP TABLE hosts;
