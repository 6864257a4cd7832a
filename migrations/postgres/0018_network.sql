-- The partner Network (DESIGN.md section 15): a tenant's connection to it. `status` is
-- `pending` from the signup until the one-time token is exchanged, then `connected`; the vendor
-- token is sealed with the secrets key. The federation key is the scoped API key the Network
-- calls this instance with; disconnecting revokes it. `payouts_reported_until` is the high-water
-- mark (Unix ms) of the payouts report, and `payouts_pending_until` the window being reported.
CREATE TABLE network_connections (
    tenant_id               TEXT PRIMARY KEY REFERENCES tenants (id),
    network_url             TEXT NOT NULL,
    contact_email           TEXT NOT NULL,
    display_name            TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('pending', 'connected')),
    signup_id               TEXT,
    vendor_id               TEXT,
    vendor_token_sealed     TEXT,
    federation_key_id       TEXT NOT NULL,
    auto_enroll             BIGINT NOT NULL CHECK (auto_enroll IN (0, 1)),
    last_error              TEXT,
    last_error_at           BIGINT,
    payouts_reported_until  BIGINT NOT NULL,
    -- The end of the payouts window being reported: kept until every currency of it was
    -- accepted, so a retry sends the very same window.
    payouts_pending_until   BIGINT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

-- The partner's creator id on the Network, stamped from the Network's answer to an upsert, and
-- the revision (its `updated_at`) of the latest change mirrored to the Network: an upsert job
-- of an older revision has been superseded.
ALTER TABLE partners ADD COLUMN network_creator_id TEXT;
ALTER TABLE partners ADD COLUMN network_revision BIGINT;

ALTER TABLE network_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE network_connections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON network_connections
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
