-- Conversion events in, their attributions to partners' clicks, and the commissions they earn.
-- Same tables and columns as the PostgreSQL twin of this file.

-- One row per `event_id` a tenant ever sent: the id deduplicates forever. `body_hash` tells a
-- repeat from a different event reusing the id; `result` is the answer the first one got.
CREATE TABLE conversions (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
    customer_id  TEXT,
    click_id     TEXT,
    amount       INTEGER,
    currency     TEXT,
    body_hash    TEXT NOT NULL,
    result       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    CONSTRAINT conversions_event_key UNIQUE (tenant_id, event_id)
);

CREATE INDEX conversions_order ON conversions (tenant_id, order_id);

CREATE TABLE attributions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    conversion_id  TEXT NOT NULL REFERENCES conversions (id),
    click_id       TEXT NOT NULL REFERENCES clicks (id),
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    campaign_id    TEXT NOT NULL REFERENCES campaigns (id),
    customer_id    TEXT,
    created_at     INTEGER NOT NULL,
    CONSTRAINT attributions_conversion_key UNIQUE (conversion_id)
);

CREATE TABLE commissions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    partner_id      TEXT NOT NULL REFERENCES partners (id),
    campaign_id     TEXT NOT NULL REFERENCES campaigns (id),
    conversion_id   TEXT NOT NULL REFERENCES conversions (id),
    click_id        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    transaction_id  TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'reversed', 'paid')),
    matures_at      INTEGER NOT NULL,
    approved_at     INTEGER,
    reversed_at     INTEGER,
    refunded_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CONSTRAINT commissions_conversion_key UNIQUE (conversion_id)
);

CREATE INDEX commissions_tenant_created ON commissions (tenant_id, created_at DESC, id DESC);
CREATE INDEX commissions_partner_created ON commissions (tenant_id, partner_id, created_at DESC, id DESC);
CREATE INDEX commissions_order ON commissions (tenant_id, order_id);
CREATE INDEX commissions_maturing ON commissions (status, matures_at);
