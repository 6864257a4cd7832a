-- Partial refunds take back the refunded share of a commission: `reversed_amount` is what they
-- took so far, in minor units of the commission's currency; the commission pays
-- `amount - reversed_amount`. A full refund still reverses the whole commission (status).
ALTER TABLE commissions ADD COLUMN reversed_amount BIGINT NOT NULL DEFAULT 0;
