//! Hand-off: a job enqueued in a transaction can be leased, in that same insert, to this
//! process's worker, which then runs it the moment the transaction commits, with no wake-up,
//! claim or round trip in between.
//!
//! A running [`crate::Worker`] offers each of its kinds as a [`Taker`]. An enqueue through a
//! [`Handoff`] takes a free slot of the kind's taker when there is one and
//! the job is due, and writes the row `running`, leased under a fresh token, instead of
//! `available`. The caller gets a [`Handoff`] and starts it after its commit. Nothing else
//! changes: the lease is fenced and reaped like a claimed one, so if the process dies the job
//! runs elsewhere once the lease expires; and a handoff that is dropped instead of started
//! gives its jobs back (`available` again, the attempt not counted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use sqlx::{Any, Transaction};

use crate::{Enqueued, Error, Job, NewJob, Queue};

/// A worker's offer to run one kind of job straight from an enqueue.
#[derive(Clone)]
pub(crate) struct Taker {
    pub slots: Arc<Semaphore>,
    pub lease: Duration,
    pub jobs: mpsc::UnboundedSender<Handed>,
}

/// Takers by queue and kind.
pub(crate) type Takers = Arc<Mutex<HashMap<(String, String), Taker>>>;

/// A job leased to a local worker at enqueue, with the slot it will run in.
pub(crate) struct Handed {
    pub job: Job,
    pub token: String,
    pub permit: OwnedSemaphorePermit,
    pub to: mpsc::UnboundedSender<Handed>,
}

/// A slot taken for a job about to be inserted leased.
pub(crate) struct Taken {
    pub token: String,
    pub lease_until: i64,
    pub permit: OwnedSemaphorePermit,
    pub to: mpsc::UnboundedSender<Handed>,
}

/// Jobs enqueued in one transaction through this handoff (from [`Queue::handoff`]), some of
/// them leased to this process's worker. Call [`Handoff::start`] once the transaction has
/// committed: the leased jobs run at once, and workers wake for the others. Dropped instead (the
/// transaction failed, an error path), it gives its leased jobs back; dropped *before* a commit
/// that then succeeds, those jobs wait for their lease to expire. So keep it beside the
/// transaction and start it right after the commit.
#[must_use = "start it once the transaction has committed"]
pub struct Handoff {
    queue: Queue,
    jobs: Vec<Handed>,
    wake: bool,
}

impl Handoff {
    pub(crate) fn new(queue: Queue) -> Self {
        Self {
            queue,
            jobs: Vec::new(),
            wake: false,
        }
    }

    pub(crate) fn push(&mut self, handed: Handed) {
        self.jobs.push(handed);
    }

    /// Some job enqueued through this handoff is not leased here: wake workers on start.
    pub(crate) fn wake_on_start(&mut self) {
        self.wake = true;
    }

    /// [`Queue::enqueue_in`], the job leased to this process's worker when it has a free slot.
    pub async fn enqueue_in(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        job: NewJob,
    ) -> Result<Enqueued, Error> {
        let queue = self.queue.clone();
        queue.enqueue_one(tx, job, Some(self)).await
    }

    /// Enqueues `jobs` in the caller's transaction, skipping those whose dedupe key exists
    /// already on their queue, each leased to this process's worker when it has a free slot.
    /// Returns how many were new.
    pub async fn enqueue_all_in(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        jobs: &[NewJob],
    ) -> Result<u64, Error> {
        let queue = self.queue.clone();
        let ids = queue.insert(tx, jobs, Some(self)).await?;
        Ok(ids.iter().flatten().count() as u64)
    }

    /// How many jobs this process's worker runs on [`Handoff::start`].
    pub fn handed(&self) -> usize {
        self.jobs.len()
    }

    /// After the transaction committed: hands the leased jobs to the local worker and wakes
    /// workers for the others.
    pub fn start(mut self) {
        if self.wake {
            self.queue.committed();
        }
        for handed in std::mem::take(&mut self.jobs) {
            let to = handed.to.clone();
            if let Err(refused) = to.send(handed) {
                // The worker stopped in between.
                give_back(&self.queue, refused.0);
            }
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        for handed in std::mem::take(&mut self.jobs) {
            give_back(&self.queue, handed);
        }
    }
}

/// Returns a handed job that will not run here to `available` (a no-op if its transaction
/// never committed).
pub(crate) fn give_back(queue: &Queue, handed: Handed) {
    let Handed {
        job, token, permit, ..
    } = handed;
    drop(permit); // The slot is free at once, not when the release has run.
    release_later(queue, job.id, token);
}

/// Returns a job leased to this process, which will not run here, to `available` in a task of
/// its own; if that fails, the reaper returns it when its lease expires.
pub(crate) fn release_later(queue: &Queue, id: String, token: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // No runtime left: the reaper returns it when the lease expires.
    };
    let queue = queue.clone();
    runtime.spawn(async move {
        if let Err(err) = queue.release(&id, &token).await {
            tracing::warn!(job = %id, error = %err,
                "giving back a leased job failed; the reaper will return it");
        }
    });
}
