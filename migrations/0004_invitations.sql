-- Invitations. Timestamps are milliseconds since the Unix epoch (UTC). A `sent` invitation whose
-- expires_at has passed is shown as `expired` at once; the sweeper persists that state later.
CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    email_address TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    identification TEXT,
    account_uri TEXT,
    organization_uri TEXT,
    role TEXT,
    inviter_full_name TEXT NOT NULL,
    -- The shared secret, sealed with the configured AEAD key (base64 of nonce and ciphertext).
    sealed_secret TEXT NOT NULL,
    -- JSON object, or NULL.
    attributes TEXT,
    -- Every verification attempt that reached this invitation.
    verification_count BIGINT NOT NULL DEFAULT 0,
    -- Wrong secrets since the secret was last set; the invitation locks at the configured limit.
    failed_verifications BIGINT NOT NULL DEFAULT 0,
    -- Emails sent: 1 on create, plus one per resend.
    send_count BIGINT NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX invitations_created ON invitations (created_at, id);
CREATE INDEX invitations_customer ON invitations (customer_id);
CREATE INDEX invitations_account ON invitations (account_uri);
CREATE INDEX invitations_organization ON invitations (organization_uri);
-- The expiry sweeper's query.
CREATE INDEX invitations_state_expiry ON invitations (state, expires_at);

-- Which customers hold which accounts or organizations (filled by `tandem entitlements import`).
CREATE TABLE entitlements (
    customer_id TEXT NOT NULL,
    resource_uri TEXT NOT NULL,
    role TEXT NOT NULL,
    -- 1 when the account does not allow joint owners.
    joint_owners_disabled BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, resource_uri)
);

CREATE INDEX entitlements_resource ON entitlements (resource_uri);

-- Verification attempts per client address, shared by every instance (verifyInvitation's 429).
CREATE TABLE verification_attempts (
    client TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL
);
