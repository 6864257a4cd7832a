-- Tenants and API keys. Same tables and columns as the SQLite twin of this file.
--
-- Every tenant table has FORCE row-level security keyed on the per-transaction setting
-- `switchyard.tenant_id` (set by `Db::read`/`Db::write`): with no tenant set a query sees no
-- rows, and a row for another tenant cannot be written. The tenant registry itself is not
-- tenant data and has no policy.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
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
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE INDEX api_keys_tenant_created ON api_keys (tenant_id, created_at DESC, id DESC);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;

-- Authentication must find a key before it knows the tenant: the lookup transaction sets
-- `switchyard.key_prefix` to the presented key's public prefix and may see that one row.
CREATE POLICY tenant_isolation ON api_keys
    USING (
        tenant_id = current_setting('switchyard.tenant_id', true)
        OR prefix = current_setting('switchyard.key_prefix', true)
    )
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
