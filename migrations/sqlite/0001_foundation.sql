-- Tenants and API keys. The PostgreSQL twin of this file has the same tables and columns,
-- plus row-level security on every tenant table.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('admin', 'scoped', 'partner')),
    scopes        TEXT NOT NULL,
    partner_id    TEXT,
    prefix        TEXT NOT NULL UNIQUE,
    secret_hash   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE INDEX api_keys_tenant_created ON api_keys (tenant_id, created_at DESC, id DESC);
