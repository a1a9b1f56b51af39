-- Listing invitations in a state (`filter=eq(state,sent)`, `?state=`) in the default order,
-- without sorting every invitation in that state.
CREATE INDEX invitations_state_created ON invitations (state, created_at, id);
