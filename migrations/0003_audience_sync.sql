-- Audience synchronization: the schedule and lease of each connection, the membership last
-- pushed to its provider, the history of runs, and the local audience source.

-- When the connection syncs next, why, and which instance holds it (lease until expiry).
ALTER TABLE audience_connections ADD COLUMN next_sync_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audience_connections ADD COLUMN next_sync_trigger TEXT NOT NULL DEFAULT 'created';
ALTER TABLE audience_connections ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audience_connections ADD COLUMN lease_owner TEXT;
ALTER TABLE audience_connections ADD COLUMN lease_expires_at BIGINT;

-- The engine's claim: due connections in a syncable state.
CREATE INDEX audience_connections_due ON audience_connections (state, next_sync_at);

-- The membership last pushed successfully to the provider, so that each run is a diff.
-- Deleting a connection deletes its rows here and in the run history, in its transaction.
CREATE TABLE audience_synced_members (
    connection_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (connection_id, customer_id)
);

-- One row per finished run.
CREATE TABLE audience_sync_runs (
    id TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL,
    run_trigger TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    added BIGINT NOT NULL,
    removed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    error TEXT,
    -- The lease owner id of the instance that ran it (for operators; see the logs).
    instance TEXT NOT NULL
);

-- Newest first per connection; the id breaks ties and is the paging cursor.
CREATE INDEX audience_sync_runs_connection ON audience_sync_runs (connection_id, started_at, id);

-- The local audience source, filled by `tandem audiences import`.
CREATE TABLE audiences (
    id TEXT PRIMARY KEY,
    name TEXT,
    imported_at BIGINT NOT NULL
);

CREATE TABLE audience_members (
    audience_id TEXT NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (audience_id, customer_id)
);
