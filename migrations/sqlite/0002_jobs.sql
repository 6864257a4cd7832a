-- The durable job queue (crate job-queue). Not tenant data: payloads carry what they need.

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    queue         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('available', 'running', 'done', 'dead')),
    priority      INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    run_at        INTEGER NOT NULL,
    lease_until   INTEGER,
    lease_token   TEXT,
    last_error    TEXT,
    dedupe_key    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
);

-- One job per (queue, dedupe_key); jobs without a key never conflict (NULLs are distinct).
CREATE UNIQUE INDEX jobs_dedupe ON jobs (queue, dedupe_key);
-- The claim: due jobs of a kind, highest priority first, oldest first.
CREATE INDEX jobs_claim ON jobs (queue, kind, state, priority DESC, run_at, id);
-- The reaper (expired leases) and the purge (old done jobs).
CREATE INDEX jobs_state_lease ON jobs (state, lease_until);
CREATE INDEX jobs_state_finished ON jobs (state, finished_at);
