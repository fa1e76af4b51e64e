-- +goose Up
-- Replicas (issue 11): what every process of a replica set shares through
-- the database.
--
-- secrets holds the signing key and the first admin token, created once by
-- whichever replica starts first (insert if absent, then read back) and
-- read by every other. value is base64 of an AES-256-GCM sealed box under
-- the key of --secret-key-file, which never enters the database.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- leases elect one process for singleton work (periodic garbage
-- collection, the sweeper): a holder keeps a lease until expires_at,
-- renewing it while it works; anyone may take an expired one.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

-- +goose Down
DROP TABLE leases;
DROP TABLE secrets;
