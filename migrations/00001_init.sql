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

-- The BTF archive: one row per kernel id DISTRO/VERSION/ARCH/RELEASE.
CREATE TABLE kernels (
    id            INTEGER PRIMARY KEY,
    kid           TEXT NOT NULL UNIQUE,
    distro        TEXT NOT NULL,
    version       TEXT NOT NULL,
    arch          TEXT NOT NULL,
    release       TEXT NOT NULL,
    build         TEXT NOT NULL DEFAULT '',
    version_code  INTEGER NOT NULL DEFAULT 0,
    btf_blob      TEXT NOT NULL,
    btf_size      INTEGER NOT NULL,
    modules_blob  TEXT NOT NULL DEFAULT '',
    modules_count INTEGER NOT NULL DEFAULT 0,
    modules_size  INTEGER NOT NULL DEFAULT 0,
    config_blob   TEXT NOT NULL DEFAULT '',
    image_blob    TEXT NOT NULL DEFAULT '',
    image_size    INTEGER NOT NULL DEFAULT 0,
    source        TEXT NOT NULL DEFAULT '',
    imported_by   TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMP NOT NULL
);
CREATE INDEX kernels_arch_release ON kernels(arch, release);
CREATE INDEX kernels_btf ON kernels(btf_blob);

-- A build compiles one revision for one arch with one set of user flags.
-- cache_key covers every input (bundle, entry, arch, flags, compiler,
-- header digests): builds with equal keys have equal outputs. A per-kernel
-- build (kernel_id set) compiles against that kernel's own vmlinux.h; a
-- CO-RE build (kernel_id NULL) is relocated for every kernel of its arch.
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
    kernel_id    INTEGER REFERENCES kernels(id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX builds_identity ON builds(revision_id, arch, flags, (COALESCE(kernel_id, 0)));
CREATE INDEX builds_state ON builds(state, id);
CREATE INDEX builds_cache_key ON builds(cache_key);

-- An artifact is a build relocated for one kernel: relocation report,
-- minimized BTF, pre-relocated object and signed manifest. Artifacts are
-- jobs too (queued -> running -> done | error), so fan-out survives crashes.
CREATE TABLE artifacts (
    id              INTEGER PRIMARY KEY,
    build_id        INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    kernel_id       INTEGER NOT NULL REFERENCES kernels(id) ON DELETE CASCADE,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'error')),
    status          TEXT NOT NULL DEFAULT '' CHECK (status IN ('', 'ok', 'poisoned', 'failed')),
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
CREATE INDEX artifacts_state ON artifacts(state, id);
CREATE INDEX artifacts_kernel ON artifacts(kernel_id);

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
DROP TABLE artifacts;
DROP TABLE builds;
DROP TABLE revisions;
DROP TABLE kernels;
DROP TABLE programs;
