-- Tenant webhook endpoints, the messages emitted to them, one delivery per (message, endpoint),
-- and every attempt of a delivery.

CREATE TABLE webhook_endpoints (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    url                   TEXT NOT NULL,
    description           TEXT NOT NULL,
    event_types           TEXT NOT NULL,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until BIGINT,
    rate_limit            BIGINT,
    rate_next_at          BIGINT,
    status                TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    disabled_reason       TEXT,
    success_count         BIGINT NOT NULL,
    failure_count         BIGINT NOT NULL,
    consecutive_failures  BIGINT NOT NULL,
    failing_since         BIGINT,
    last_status           BIGINT,
    last_attempt_at       BIGINT,
    last_success_at       BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    deleted_at            BIGINT
);

CREATE INDEX webhook_endpoints_tenant_created ON webhook_endpoints (tenant_id, created_at DESC, id DESC);
CREATE INDEX webhook_endpoints_tenant_url ON webhook_endpoints (tenant_id, url);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    message_id   TEXT NOT NULL REFERENCES messages (id),
    endpoint_id  TEXT NOT NULL REFERENCES webhook_endpoints (id),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts     BIGINT NOT NULL,
    last_status  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (message_id, endpoint_id)
);

CREATE INDEX deliveries_endpoint_created ON deliveries (tenant_id, endpoint_id, created_at DESC, id DESC);

CREATE TABLE delivery_attempts (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    delivery_id    TEXT NOT NULL REFERENCES deliveries (id),
    endpoint_id    TEXT NOT NULL REFERENCES webhook_endpoints (id),
    status_code    BIGINT,
    error_class    TEXT,
    latency_ms     BIGINT NOT NULL,
    response_body  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, created_at);
CREATE INDEX delivery_attempts_endpoint ON delivery_attempts (endpoint_id, created_at DESC);

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_endpoints
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deliveries
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE delivery_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE delivery_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON delivery_attempts
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
