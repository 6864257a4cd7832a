-- Per-partner postback URL templates (GET, unsigned) and one fire per (message, postback).
-- Same tables and columns as the PostgreSQL twin of this file.

CREATE TABLE postbacks (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    partner_id            TEXT NOT NULL REFERENCES partners (id),
    url_template          TEXT NOT NULL,
    event_types           TEXT NOT NULL,
    enabled               INTEGER NOT NULL,
    disabled_reason       TEXT,
    success_count         INTEGER NOT NULL,
    failure_count         INTEGER NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    last_status           INTEGER,
    last_fired_at         INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    deleted_at            INTEGER
);

CREATE INDEX postbacks_partner_created ON postbacks (tenant_id, partner_id, created_at DESC, id DESC);

CREATE TABLE postback_fires (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    postback_id  TEXT NOT NULL REFERENCES postbacks (id),
    message_id   TEXT NOT NULL REFERENCES messages (id),
    url          TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts     INTEGER NOT NULL,
    last_status  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    CONSTRAINT postback_fires_message_postback_key UNIQUE (message_id, postback_id)
);
