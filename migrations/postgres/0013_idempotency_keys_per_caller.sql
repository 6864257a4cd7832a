-- A kept answer belongs to the caller that made it (the API key, later also a session): it is
-- found by tenant, caller and key, so another caller with the same `Idempotency-Key` runs a
-- request of its own instead of receiving an answer meant for someone else. The answer is
-- sealed with the secrets key (`response_sealed`), because answers can carry secrets shown once
-- (a new API key, a webhook signing secret). Answers kept before this migration are in clear
-- and name no caller: they are dropped with the old table (they live a day at most).

DROP TABLE idempotency_keys;

CREATE TABLE idempotency_keys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    caller           TEXT NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    status_code      BIGINT,
    content_type     TEXT,
    response_sealed  TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, caller, key)
);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
