-- Dead letters: a message the relay or the mailer refuses permanently, or one that kept failing
-- past the configured number of attempts, is marked failed instead of being retried forever.
-- It is kept (never deleted) for operators to see in `tandem mail-queue` and to queue again.
ALTER TABLE email_outbox ADD COLUMN failed_at BIGINT;

-- The claim reads only messages still to be tried: failed ones leave the partial index, so a
-- pile of dead letters never slows the claim down.
DROP INDEX email_outbox_unsent;
CREATE INDEX email_outbox_unsent ON email_outbox (next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
