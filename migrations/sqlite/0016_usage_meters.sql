-- Usage meters out: a hosted operator bills each tenant for its attributed revenue through a
-- Stripe Billing meter. `billing_customer` is the tenant's customer in the operator's Stripe
-- account (`switchyard tenants update --billing-customer cus_...`).
ALTER TABLE tenants ADD COLUMN billing_customer TEXT;

-- Per tenant, the high-water mark of what was reported: conversions created up to
-- `reported_until` (Unix ms) are counted. A window being reported is kept in `pending_*`
-- first, so a retry after a crash sends the very same meter event (same identifier), which
-- Stripe deduplicates, instead of a second one for a wider window.
CREATE TABLE usage_marks (
    tenant_id       TEXT PRIMARY KEY REFERENCES tenants (id),
    reported_until  INTEGER NOT NULL,
    pending_until   INTEGER,
    pending_value   INTEGER,
    updated_at      INTEGER NOT NULL
);
