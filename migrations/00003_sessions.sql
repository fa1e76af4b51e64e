-- +goose Up
-- Web UI sessions. A session is opened by signing in with an API token; the
-- browser holds an opaque random id in an HttpOnly cookie and the database
-- keeps only its SHA-256 (id), so a copy of the database opens no session.
-- csrf is the session's synchronizer token, embedded in every form.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,          -- hex sha256 of the cookie value
    token_id    INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'reader')),
    csrf        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL,
    user_agent  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_token ON sessions(token_id);
CREATE INDEX sessions_expires ON sessions(expires_at);

-- Revoking a token ends its sessions (lookups also check revoked_at).
-- Triggers are written differently in each dialect.
-- +dialect sqlite
-- +goose StatementBegin
CREATE TRIGGER sessions_revoke AFTER UPDATE OF revoked_at ON tokens
WHEN NEW.revoked_at IS NOT NULL
BEGIN
    DELETE FROM sessions WHERE token_id = NEW.id;
END;
-- +goose StatementEnd
-- +dialect postgres
-- +goose StatementBegin
CREATE FUNCTION sessions_revoke() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessions WHERE token_id = NEW.id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER sessions_revoke AFTER UPDATE OF revoked_at ON tokens
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL) EXECUTE FUNCTION sessions_revoke();
-- +dialect end

-- The UI's overview queries: a program's latest revision, and artifact
-- counts by build or kernel without reading the artifact rows themselves.
CREATE INDEX revisions_program_latest ON revisions(program_id, created_at, id);
CREATE INDEX artifacts_build_summary ON artifacts(build_id, state, status, kernel_id);
CREATE INDEX artifacts_kernel_summary ON artifacts(kernel_id, state, status, build_id);

-- +goose Down
DROP INDEX artifacts_kernel_summary;
DROP INDEX artifacts_build_summary;
DROP INDEX revisions_program_latest;
-- +dialect sqlite
DROP TRIGGER sessions_revoke;
-- +dialect postgres
DROP TRIGGER sessions_revoke ON tokens;
DROP FUNCTION sessions_revoke();
-- +dialect end
DROP TABLE sessions;
