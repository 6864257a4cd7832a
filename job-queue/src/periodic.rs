//! Periodic jobs from cron expressions.
//!
//! Each tick enqueues, for every entry, the latest window that started since the previous tick,
//! with the dedupe key `kind:window-start-ms`. Every node may run a scheduler: the dedupe key
//! makes each window one job, whichever node enqueues it first.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Error, NewJob, Queue};

pub struct Periodic {
    queue: Queue,
    entries: Vec<(cron::Schedule, NewJob)>,
}

impl Periodic {
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            entries: Vec::new(),
        }
    }

    /// Adds `job` on `expression` (with a seconds field: `0 */5 * * * *` is every five minutes).
    pub fn every(mut self, expression: &str, job: NewJob) -> Result<Self, Error> {
        let schedule = cron::Schedule::from_str(expression)
            .map_err(|e| Error::Cron(expression.to_owned(), e.to_string()))?;
        self.entries.push((schedule, job));
        Ok(self)
    }

    /// Enqueues the latest window in `(since, now]` of every entry. Returns how many jobs were
    /// new (windows another scheduler enqueued first do not count).
    pub async fn tick(&self, since: i64, now: i64) -> Result<usize, Error> {
        let (Some(since_at), Some(now_at)) = (
            DateTime::<Utc>::from_timestamp_millis(since),
            DateTime::<Utc>::from_timestamp_millis(now),
        ) else {
            return Ok(0);
        };
        let mut fresh = 0;
        for (schedule, job) in &self.entries {
            let Some(window) = schedule
                .after(&since_at)
                .take_while(|t| *t <= now_at)
                .last()
            else {
                continue;
            };
            let start = window.timestamp_millis();
            let job = job
                .clone()
                .run_at(start)
                .dedupe_key(format!("{}:{start}", job.kind));
            if !self.queue.enqueue(job).await?.duplicate {
                fresh += 1;
            }
        }
        Ok(fresh)
    }

    /// Ticks every `interval` until `shutdown` resolves.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut since = self.queue.now();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = self.queue.now();
            match self.tick(since, now).await {
                Ok(_) => since = now,
                Err(err) => {
                    tracing::warn!(error = %err, "enqueueing periodic jobs failed; retrying next tick")
                }
            }
        }
    }
}
