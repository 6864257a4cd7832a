-- Per-partner postback URL templates (GET, unsigned) and one fire per (message, postback).
-- Same tables and columns as the SQLite twin of this file.

CREATE TABLE postbacks (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    partner_id            TEXT NOT NULL REFERENCES partners (id),
    url_template          TEXT NOT NULL,
    event_types           TEXT NOT NULL,
    enabled               BIGINT NOT NULL,
    disabled_reason       TEXT,
    success_count         BIGINT NOT NULL,
    failure_count         BIGINT NOT NULL,
    consecutive_failures  BIGINT NOT NULL,
    last_status           BIGINT,
    last_fired_at         BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    deleted_at            BIGINT
);

CREATE INDEX postbacks_partner_created ON postbacks (tenant_id, partner_id, created_at DESC, id DESC);

CREATE TABLE postback_fires (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    postback_id  TEXT NOT NULL REFERENCES postbacks (id),
    message_id   TEXT NOT NULL REFERENCES messages (id),
    url          TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts     BIGINT NOT NULL,
    last_status  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    CONSTRAINT postback_fires_message_postback_key UNIQUE (message_id, postback_id)
);

ALTER TABLE postbacks ENABLE ROW LEVEL SECURITY;
ALTER TABLE postbacks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON postbacks
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));

ALTER TABLE postback_fires ENABLE ROW LEVEL SECURITY;
ALTER TABLE postback_fires FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON postback_fires
    USING (tenant_id = current_setting('switchyard.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('switchyard.tenant_id', true));
