-- The delivery worker's claim takes the first due messages in (next_attempt_at, id) order.
-- Over `email_outbox_due` it read and sorted every due message for each batch: with a backlog
-- of 15,000 (after a burst of invitations, or a relay outage) one claim of 20 took 10-15 ms.
-- This index holds only the unsent messages, in the claim's order, so a claim reads its batch.
CREATE INDEX email_outbox_unsent ON email_outbox (next_attempt_at, id) WHERE sent_at IS NULL;
