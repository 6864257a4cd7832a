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
    previous_secret_until INTEGER,
    rate_limit            INTEGER,
    rate_next_at          INTEGER,
    status                TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    disabled_reason       TEXT,
    success_count         INTEGER NOT NULL,
    failure_count         INTEGER NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    failing_since         INTEGER,
    last_status           INTEGER,
    last_attempt_at       INTEGER,
    last_success_at       INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    deleted_at            INTEGER
);

CREATE INDEX webhook_endpoints_tenant_created ON webhook_endpoints (tenant_id, created_at DESC, id DESC);
CREATE INDEX webhook_endpoints_tenant_url ON webhook_endpoints (tenant_id, url);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    message_id   TEXT NOT NULL REFERENCES messages (id),
    endpoint_id  TEXT NOT NULL REFERENCES webhook_endpoints (id),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts     INTEGER NOT NULL,
    last_status  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (message_id, endpoint_id)
);

CREATE INDEX deliveries_endpoint_created ON deliveries (tenant_id, endpoint_id, created_at DESC, id DESC);

CREATE TABLE delivery_attempts (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    delivery_id    TEXT NOT NULL REFERENCES deliveries (id),
    endpoint_id    TEXT NOT NULL REFERENCES webhook_endpoints (id),
    status_code    INTEGER,
    error_class    TEXT,
    latency_ms     INTEGER NOT NULL,
    response_body  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, created_at);
CREATE INDEX delivery_attempts_endpoint ON delivery_attempts (endpoint_id, created_at DESC);
