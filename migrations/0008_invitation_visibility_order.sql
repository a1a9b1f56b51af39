-- A customer's list reads each of the ways they see invitations (their own, those on the
-- accounts and organizations they hold) in listing order and stops after the page: the three
-- indexes lead with creation order, and still carry the state and expiry so that whether an
-- invitation matches is decided in the index. In 0007 they led with the state, and a list read
-- and sorted all the invitations the customer may see: after the benchmark's creates, customer 1
-- (about 80,000 invitations) got 18-41 lists a second on SQLite, 1,680 this way.
DROP INDEX invitations_customer;
DROP INDEX invitations_account;
DROP INDEX invitations_organization;
CREATE INDEX invitations_customer ON invitations (customer_id, created_at, id, state, expires_at);
CREATE INDEX invitations_account ON invitations (account_uri, created_at, id, state, expires_at)
    WHERE account_uri IS NOT NULL;
CREATE INDEX invitations_organization
    ON invitations (organization_uri, created_at, id, state, expires_at)
    WHERE organization_uri IS NOT NULL;
