-- The inviter's core customer group (`customerGroup`), from the claim `auth.customer_group_claim`
-- of their token; NULL when the token names none (and for every invitation created before).
ALTER TABLE invitations ADD COLUMN customer_group TEXT;
