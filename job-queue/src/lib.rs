//! A durable, transactional job queue on SQLite and PostgreSQL through sqlx `Any`.
//!
//! Every outbound side effect of an application built on it runs as a job, so the queue's
//! guarantees are the application's:
//!
//! - **Transactional enqueue**: [`Queue::enqueue_in`] writes the job in the caller's transaction,
//!   so the job exists if and only if the caller's own writes commit.
//! - **At-least-once, never twice at once**: a claim sets a lease and a fresh lease token; a
//!   handler's outcome is recorded only if its token still holds the lease (fencing), a reaper
//!   returns expired leases, and long handlers extend theirs.
//! - **Stored retries**: retry delays come from a per-kind [`RetrySchedule`] and are written to
//!   `run_at`, so a restart loses no wait. Exhausted jobs become `dead`, visible and replayable.
//! - **Periodic jobs** ([`Periodic`]) are enqueued with the dedupe key `kind:window-start`, so any
//!   number of nodes may run the scheduler and each window runs once.
//!
//! The queue needs the `jobs` table (see the application's `migrations/*/0002_jobs.sql`). It
//! knows nothing about what its jobs do.

mod handoff;
mod periodic;
mod queue;
mod schedule;
mod worker;

use std::sync::Arc;

pub use handoff::Handoff;
pub use periodic::Periodic;
pub use queue::{Enqueued, KindStats, Local, NewJob, Queue, Stats};
pub use schedule::RetrySchedule;
pub use worker::{Job, KindOptions, Outcome, Worker, WorkerOptions};

/// The database engine behind the pool: the claim query differs (`FOR UPDATE SKIP LOCKED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The current time in Unix milliseconds. Injectable so tests can move time instead of sleeping.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Wall-clock time, the default [`Now`].
pub fn system_now() -> Now {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    })
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("invalid cron expression {0:?}: {1}")]
    Cron(String, String),
}
