-- Transactional outbox for email: a message is written in the same transaction as the change
-- that causes it, and a background worker delivers it. Nothing is sent inline in a request.
CREATE TABLE email_outbox (
    id TEXT PRIMARY KEY,
    -- The template that renders the message, e.g. "invitation".
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    -- BCP 47 language tag the message is rendered in, e.g. "en" or "es".
    locale TEXT NOT NULL,
    -- JSON object with the template's data.
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    sent_at BIGINT,
    last_error TEXT
);

-- The worker's query: unsent messages that are due.
CREATE INDEX email_outbox_due ON email_outbox (sent_at, next_attempt_at);
