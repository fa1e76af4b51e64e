-- +goose Up
-- A verification boots an artifact's kernel (from its image) in a VM and
-- loads every program of the artifact there, load-only: one per artifact
-- (build x kernel) whose kernel has an image. Verifications are jobs too
-- (queued -> running -> done | error), so the queue survives crashes.
-- result: verified (every program accepted), rejected (some refused by the
-- kernel), kernel-error (panic, no /init, garbage), timeout, runner-error,
-- skipped (no qemu for the kernel's arch: queued again on the next start).
CREATE TABLE verifications (
    id            INTEGER PRIMARY KEY,
    artifact_id   INTEGER NOT NULL UNIQUE REFERENCES artifacts(id) ON DELETE CASCADE,
    kernel_image  TEXT NOT NULL DEFAULT '',  -- image blob verified with
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'error')),
    result        TEXT NOT NULL DEFAULT '' CHECK (result IN ('', 'verified', 'rejected', 'kernel-error', 'timeout', 'runner-error', 'skipped')),
    reason        TEXT NOT NULL DEFAULT '',
    programs      TEXT NOT NULL DEFAULT '[]', -- []api.ProgramVerification
    release       TEXT NOT NULL DEFAULT '',  -- uname -r in the VM
    accel         TEXT NOT NULL DEFAULT '',  -- kvm or tcg
    runner        TEXT NOT NULL DEFAULT '',  -- sha256 of the runner binary
    console_tail  TEXT NOT NULL DEFAULT '',
    console_blob  TEXT NOT NULL DEFAULT '',
    boot_ms       INTEGER NOT NULL DEFAULT 0,
    duration_ms   INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMP NOT NULL,
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP
);
CREATE INDEX verifications_state ON verifications(state, id);

-- +goose Down
DROP TABLE verifications;
