-- Customer audience connections. Timestamps are milliseconds since the Unix epoch (UTC).
CREATE TABLE audience_connections (
    id TEXT PRIMARY KEY,
    audience_id TEXT NOT NULL,
    audience_name TEXT,
    provider_name TEXT NOT NULL,
    connected_resource_id TEXT,
    state TEXT NOT NULL,
    state_reason TEXT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by_id TEXT NOT NULL,
    created_by_username TEXT NOT NULL,
    created_by_first_name TEXT NOT NULL,
    created_by_last_name TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by_id TEXT NOT NULL,
    updated_by_username TEXT NOT NULL,
    updated_by_first_name TEXT NOT NULL,
    updated_by_last_name TEXT NOT NULL,
    last_synced_at BIGINT
);

-- One connection per (audience, provider name), also under concurrent creates.
CREATE UNIQUE INDEX audience_connections_audience_provider
    ON audience_connections (audience_id, provider_name);

-- Listing order: newest first, id as the tie-breaker and paging cursor.
CREATE INDEX audience_connections_created
    ON audience_connections (created_at, id);
