-- Staff lists confined to a state, in listing order: the first page is read from this index in
-- order instead of sorting every invitation in the state (400k `sent` of 1M: 60 ms on SQLite
-- walking creation order, 0.1 ms here). expires_at is carried so that whether a `sent`
-- invitation is already expired is decided in the index.
CREATE INDEX invitations_state_created ON invitations (state, created_at, id, expires_at);
