-- +goose Up
-- Trust (issue 12): host tokens, unverified kernels, per-token quotas.
--
-- tokens gains the role 'host' (a token bound to one host name, made by
-- `bpfarm hosts enroll`), the labels enrolled with it, and per-token quota
-- overrides (NULL: the server's default). SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt; sessions (which reference
-- tokens) are kept across the rebuild.
CREATE TEMP TABLE sessions_keep AS SELECT * FROM sessions;

CREATE TABLE tokens_new (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'reader', 'host')),
    hash                TEXT NOT NULL UNIQUE,
    created_at          TIMESTAMP NOT NULL,
    last_used_at        TIMESTAMP,
    revoked_at          TIMESTAMP,
    host                TEXT NOT NULL DEFAULT '',   -- role host: the host name it is bound to
    host_labels         TEXT NOT NULL DEFAULT '{}', -- role host: labels enrolled with it
    max_bytes           INTEGER,                    -- quota overrides; NULL: the default
    max_revisions       INTEGER,
    max_builds_per_hour INTEGER,
    CHECK ((role = 'host') = (host != ''))
);
INSERT INTO tokens_new (id, name, role, hash, created_at, last_used_at, revoked_at)
    SELECT id, name, role, hash, created_at, last_used_at, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE UNIQUE INDEX tokens_live_host ON tokens(host) WHERE host != '' AND revoked_at IS NULL;

INSERT INTO sessions SELECT * FROM sessions_keep WHERE 1 = 1 ON CONFLICT DO NOTHING;
DROP TABLE sessions_keep;

-- The trigger went with the old table (see 00003_sessions.sql).
-- +dialect sqlite
-- +goose StatementBegin
CREATE TRIGGER sessions_revoke AFTER UPDATE OF revoked_at ON tokens
WHEN NEW.revoked_at IS NOT NULL
BEGIN
    DELETE FROM sessions WHERE token_id = NEW.id;
END;
-- +goose StatementEnd
-- +dialect postgres
CREATE TRIGGER sessions_revoke AFTER UPDATE OF revoked_at ON tokens
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL) EXECUTE FUNCTION sessions_revoke();
-- +dialect end

-- A kernel whose BTF a host uploaded is unverified until an admin approves
-- it or the same BTF arrives from a trusted import; source_host names the
-- host that uploaded it.
ALTER TABLE kernels ADD COLUMN trust TEXT NOT NULL DEFAULT 'trusted' CHECK (trust IN ('trusted', 'unverified'));
ALTER TABLE kernels ADD COLUMN source_host TEXT NOT NULL DEFAULT '';

-- Builds count against their revision's pusher (builds per hour).
CREATE INDEX builds_created ON builds(created_at);
CREATE INDEX revisions_pushed_by ON revisions(pushed_by);

-- +goose Down
DROP INDEX revisions_pushed_by;
DROP INDEX builds_created;
ALTER TABLE kernels DROP COLUMN source_host;
ALTER TABLE kernels DROP COLUMN trust;
DROP INDEX tokens_live_host;
