-- The partner program: partners and their history, campaigns, the partnerships that snapshot a
-- campaign's terms, share links and their clicks, customers and the identity graph.
-- Same tables and columns as the SQLite twin of this file.

-- A tenant's region for phone numbers written without a country code (NULL: the server default).
ALTER TABLE tenants ADD COLUMN phone_region TEXT;

CREATE TABLE partners (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    email                TEXT NOT NULL,
    name                 TEXT NOT NULL,
    phone                TEXT,
    metadata             TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    source               TEXT NOT NULL CHECK (source IN ('direct', 'network')),
    network_partner_id   TEXT,
    terms_type           TEXT CHECK (terms_type IN ('percent', 'flat')),
    terms_bps            BIGINT,
    terms_amount         BIGINT,
    terms_currency       TEXT,
    revoked_at           BIGINT,
    revoked_reason       TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    CONSTRAINT partners_email_key UNIQUE (tenant_id, email)
);

CREATE INDEX partners_tenant_created ON partners (tenant_id, created_at DESC, id DESC);

-- Revocations and reinstatements, never deleted.
CREATE TABLE partner_history (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    partner_id  TEXT NOT NULL REFERENCES partners (id),
    action      TEXT NOT NULL CHECK (action IN ('revoked', 'reinstated')),
    reason      TEXT,
    notify      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX partner_history_partner ON partner_history (partner_id, created_at);

CREATE TABLE campaigns (
    id                        TEXT PRIMARY KEY,
    tenant_id                 TEXT NOT NULL REFERENCES tenants (id),
    name                      TEXT NOT NULL,
    destination_url           TEXT NOT NULL,
    allowed_domains           TEXT NOT NULL,
    click_param               TEXT NOT NULL,
    commission_type           TEXT NOT NULL CHECK (commission_type IN ('percent', 'flat')),
    commission_bps            BIGINT,
    commission_amount         BIGINT,
    commission_currency       TEXT,
    recurring                 BIGINT NOT NULL,
    holdback_days             BIGINT NOT NULL,
    attribution_model         TEXT NOT NULL CHECK (attribution_model IN ('last_click', 'first_click')),
    attribution_window_days   BIGINT NOT NULL,
    starts_at                 BIGINT,
    ends_at                   BIGINT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);

CREATE INDEX campaigns_tenant_created ON campaigns (tenant_id, created_at DESC, id DESC);

-- A partner in a campaign, with the campaign's terms as they were when the partner joined.
CREATE TABLE partnerships (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    partner_id           TEXT NOT NULL REFERENCES partners (id),
    campaign_id          TEXT NOT NULL REFERENCES campaigns (id),
    commission_type      TEXT NOT NULL CHECK (commission_type IN ('percent', 'flat')),
    commission_bps       BIGINT,
    commission_amount    BIGINT,
    commission_currency  TEXT,
    recurring            BIGINT NOT NULL,
    holdback_days        BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    CONSTRAINT partnerships_partner_campaign_key UNIQUE (partner_id, campaign_id)
);

CREATE INDEX partnerships_tenant_created ON partnerships (tenant_id, created_at DESC, id DESC);

-- Link keys are unique across tenants: `/r/{key}` names no tenant.
CREATE TABLE links (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    partner_id   TEXT NOT NULL REFERENCES partners (id),
    campaign_id  TEXT NOT NULL REFERENCES campaigns (id),
    link_key     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    CONSTRAINT links_key_key UNIQUE (link_key)
);

CREATE INDEX links_partner_created ON links (tenant_id, partner_id, created_at DESC, id DESC);

CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    created_at  BIGINT NOT NULL
);

CREATE TABLE clicks (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    link_id      TEXT NOT NULL REFERENCES links (id),
    partner_id   TEXT NOT NULL REFERENCES partners (id),
    campaign_id  TEXT NOT NULL REFERENCES campaigns (id),
    customer_id  TEXT REFERENCES customers (id),
    revoked      BIGINT NOT NULL,
    ip_hash      TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    referer      TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE INDEX clicks_customer ON clicks (tenant_id, customer_id, created_at);
CREATE INDEX clicks_link_created ON clicks (tenant_id, link_id, created_at);

-- (namespace, identifier) -> subject. A person can be both a member (a partner) and a customer,
-- so an identifier is unique per subject type.
CREATE TABLE identities (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    namespace     TEXT NOT NULL,
    identifier    TEXT NOT NULL,
    subject_type  TEXT NOT NULL CHECK (subject_type IN ('customer', 'member')),
    subject_id    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, namespace, identifier, subject_type)
);

CREATE INDEX identities_subject ON identities (tenant_id, subject_id);

ALTER TABLE partners ENABLE ROW LEVEL SECURITY;
ALTER TABLE partners FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON partners
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE partner_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE partner_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON partner_history
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaigns
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE partnerships ENABLE ROW LEVEL SECURITY;
ALTER TABLE partnerships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON partnerships
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE links ENABLE ROW LEVEL SECURITY;
ALTER TABLE links FORCE ROW LEVEL SECURITY;
-- The click router finds a link by its key before it knows the tenant: that transaction sets
-- `switchyard.link_key` and may see that one link.
CREATE POLICY tenant_isolation ON links
    USING (
        tenant_id = current_setting('switchyard.tenant_id', true)
        OR link_key = current_setting('switchyard.link_key', true)
    )
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE customers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON customers
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE clicks ENABLE ROW LEVEL SECURITY;
ALTER TABLE clicks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON clicks
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE identities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identities
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
