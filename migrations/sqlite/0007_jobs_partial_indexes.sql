-- Each index of the jobs table covers only the state its query looks for. A job changes state
-- two or three times in its life, and every change used to add an entry to every state index;
-- the claim then stepped over the stale `available` entries of jobs long since claimed.

DROP INDEX jobs_claim;
DROP INDEX jobs_state_lease;
DROP INDEX jobs_state_finished;

-- The claim: due jobs of a kind, highest priority first, oldest first.
CREATE INDEX jobs_available ON jobs (queue, kind, priority DESC, run_at, id) WHERE state = 'available';
-- The reaper: expired leases.
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE state = 'running';
-- The purge: old done jobs.
CREATE INDEX jobs_done_finished ON jobs (finished_at) WHERE state = 'done';
