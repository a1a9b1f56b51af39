-- An invitation is seen through the one URI its type names: `account_uri` for a joint
-- invitation, `organization_uri` for an authorized signer, neither for a product promotion.
-- Creates used to accept the other URI as well, unchecked against the inviter's entitlements,
-- and its holders then saw the invitation: such URIs are removed.
UPDATE invitations SET account_uri = NULL WHERE type <> 'joint' AND account_uri IS NOT NULL;
UPDATE invitations SET organization_uri = NULL
    WHERE type <> 'authorizedSigner' AND organization_uri IS NOT NULL;
-- A customer's list walks each account and organization it holds for invitations of the
-- matching type only; carrying the type, these indexes still decide a walk's matches alone.
DROP INDEX invitations_account;
DROP INDEX invitations_organization;
CREATE INDEX invitations_account
    ON invitations (account_uri, created_at, id, state, expires_at, type)
    WHERE account_uri IS NOT NULL;
CREATE INDEX invitations_organization
    ON invitations (organization_uri, created_at, id, state, expires_at, type)
    WHERE organization_uri IS NOT NULL;
-- Every create, by inviter, for the daily cap on creates (`invitations.daily_invitations_per_
-- customer`): deleting an invitation does not give its place back. The sweeper forgets the
-- creates older than the cap's 24 hours.
CREATE TABLE invitation_creations (
    customer_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX invitation_creations_customer ON invitation_creations (customer_id, created_at);
CREATE INDEX invitation_creations_created ON invitation_creations (created_at);
