-- `Idempotency-Key` on POST requests: the first request's fingerprint and, once answered, its
-- response, replayed to every retry with the same key. Same columns on both engines.

CREATE TABLE idempotency_keys (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    key            TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    status_code    BIGINT,
    content_type   TEXT,
    response_body  TEXT,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
