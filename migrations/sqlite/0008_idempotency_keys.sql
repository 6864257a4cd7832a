-- `Idempotency-Key` on POST requests: the first request's fingerprint and, once answered, its
-- response, replayed to every retry with the same key. Same columns on both engines.

CREATE TABLE idempotency_keys (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    key            TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    status_code    INTEGER,
    content_type   TEXT,
    response_body  TEXT,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
