-- +goose Up
-- Header sets: versioned libbpf headers an admin imports (the built-in set,
-- the host's libbpf-dev, has no row). A set is immutable once imported;
-- each header is a blob, shared by digest between sets.
CREATE TABLE header_sets (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    digest       TEXT NOT NULL,            -- headerset digest of the files
    version      TEXT NOT NULL DEFAULT '', -- libbpf MAJOR.MINOR from libbpf_version.h
    files        INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    imported_by  TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMP NOT NULL
);
CREATE TABLE header_set_files (
    set_id  INTEGER NOT NULL REFERENCES header_sets(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,   -- flat header name, e.g. bpf_helpers.h
    blob    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (set_id, name)
);
-- The header set a build compiles with ('' = the built-in one); its digest
-- is in the build's cache key.
ALTER TABLE builds ADD COLUMN header_set TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE builds DROP COLUMN header_set;
DROP TABLE header_set_files;
DROP TABLE header_sets;
