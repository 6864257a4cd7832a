-- Stripe in (DESIGN.md section 11). A tenant's Stripe settings: the API key and the webhook
-- signing secrets, sealed with the secrets key (AES-256-GCM); what the API may show of the key
-- (mode, last four characters) is kept beside it in clear.
CREATE TABLE stripe_settings (
    tenant_id                TEXT PRIMARY KEY REFERENCES tenants (id),
    secret_key_sealed        TEXT,
    key_mode                 TEXT,
    key_last4                TEXT,
    -- A sealed JSON array of strings each.
    webhook_secrets_sealed   TEXT NOT NULL,
    connect_secrets_sealed   TEXT NOT NULL,
    updated_at               BIGINT NOT NULL
);

-- Every verified Stripe event, stored before it is answered and processed by a job. `state`:
-- received (not processed yet), processed, unattributed, recorded (kept, nothing to earn),
-- ignored (a type or mode this hub does not act on) or failed; `outcome` is JSON saying what
-- it became.
CREATE TABLE stripe_events (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    id           TEXT NOT NULL,
    type         TEXT NOT NULL,
    livemode     BIGINT NOT NULL,
    account      TEXT,
    -- The id of `data.object` (`ch_...`, `in_...`): the events of one charge, found together;
    -- for an invoice payment, the payment intent that paid the invoice.
    object_id    TEXT,
    payload      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    state        TEXT NOT NULL,
    outcome      TEXT,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX stripe_events_newest ON stripe_events (tenant_id, received_at DESC, id DESC);
CREATE INDEX stripe_events_object ON stripe_events (tenant_id, object_id);

ALTER TABLE stripe_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stripe_settings
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stripe_events
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
