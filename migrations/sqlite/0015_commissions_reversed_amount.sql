-- Partial refunds take back the refunded share of a commission: `reversed_amount` is what they
-- took so far, in minor units of the commission's currency; the commission pays
-- `amount - reversed_amount`. A full refund still reverses the whole commission (status).
ALTER TABLE commissions ADD COLUMN reversed_amount INTEGER NOT NULL DEFAULT 0;

-- Refunds reported as a running total (Stripe's `amount_refunded` of a charge) share a
-- `refund_group` (the charge): the order's refunded amount counts each group's largest total
-- once, so the events of one charge may arrive in any order, or twice, and count right.
ALTER TABLE conversions ADD COLUMN refund_group TEXT;
