//! Workers: claim due jobs, run their handlers, record outcomes, keep leases alive, reap and
//! purge, and stop gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::queue::Claimed;
use crate::{Error, Queue, RetrySchedule};

/// What a handler decided about its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Try again: after `after` when given (e.g. from a `Retry-After` header), else after the
    /// kind's schedule. Buried as `dead` once the attempts are spent.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Do not try again: the job becomes `dead` with this error.
    Fail(String),
}

impl Outcome {
    pub fn retry(error: impl Into<String>) -> Self {
        Self::Retry {
            after: None,
            error: error.into(),
        }
    }

    pub fn retry_after(after: Duration, error: impl Into<String>) -> Self {
        Self::Retry {
            after: Some(after),
            error: error.into(),
        }
    }
}

/// A job handed to a handler.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    /// When the lease taken for this run expires (Unix ms); the worker extends it while the
    /// handler runs.
    pub lease_until: i64,
}

/// How one kind of job runs.
#[derive(Clone, Debug)]
pub struct KindOptions {
    /// Jobs of this kind running at once on this worker.
    pub concurrency: usize,
    pub schedule: RetrySchedule,
    /// How long a claim holds a job before the reaper may hand it to another worker. Extended
    /// every third of it while the handler runs.
    pub lease: Duration,
}

impl Default for KindOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            schedule: RetrySchedule::default(),
            lease: Duration::from_secs(60),
        }
    }
}

/// How a worker polls, maintains the table and shuts down.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub queue: String,
    /// How often an idle worker looks for due jobs.
    pub poll_interval: Duration,
    /// How often expired leases are reaped and old done jobs purged.
    pub maintenance_interval: Duration,
    /// How long done jobs are kept.
    pub retention: Duration,
    /// How long a shutdown waits for running handlers before releasing their jobs.
    pub shutdown_timeout: Duration,
    /// PostgreSQL: a URL to LISTEN on, so that an idle worker wakes the moment any node commits
    /// a job, instead of at its next poll.
    pub listen_url: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            queue: "default".to_owned(),
            poll_interval: Duration::from_millis(50),
            maintenance_interval: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            shutdown_timeout: Duration::from_secs(30),
            listen_url: None,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Handler = Arc<dyn Fn(Job) -> BoxFuture + Send + Sync>;

struct Kind {
    name: String,
    options: KindOptions,
    handler: Handler,
    slots: Arc<Semaphore>,
}

/// Runs handlers for registered kinds of one queue.
pub struct Worker {
    queue: Queue,
    options: WorkerOptions,
    kinds: Vec<Kind>,
}

impl Worker {
    pub fn new(queue: Queue, options: WorkerOptions) -> Self {
        Self {
            queue,
            options,
            kinds: Vec::new(),
        }
    }

    /// Registers the handler for `kind`.
    pub fn register<F, Fut>(mut self, kind: &str, options: KindOptions, handler: F) -> Self
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        self.kinds.push(Kind {
            name: kind.to_owned(),
            options,
            handler: Arc::new(move |job| Box::pin(handler(job))),
            slots,
        });
        self
    }

    /// Runs until `shutdown` resolves, then stops claiming, lets running handlers finish within
    /// the shutdown timeout and releases the jobs of those that did not.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
        let mut last_maintenance: Option<Instant> = None;
        let wake = self.queue.wake().clone();
        let listener = self.options.listen_url.clone().map(|url| {
            let wake = wake.clone();
            AbortOnDrop(tokio::spawn(listen(url, self.options.queue.clone(), wake)))
        });
        tokio::pin!(shutdown);

        loop {
            if last_maintenance.is_none_or(|at| at.elapsed() >= self.options.maintenance_interval) {
                self.maintain().await;
                last_maintenance = Some(Instant::now());
            }
            let mut claimed_any = false;
            for kind in &self.kinds {
                let free = kind.slots.available_permits();
                if free == 0 {
                    continue;
                }
                let token = ulid::Ulid::new().to_string();
                let claimed = match self
                    .queue
                    .claim(
                        &self.options.queue,
                        &kind.name,
                        free,
                        kind.options.lease,
                        &token,
                    )
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(err) => {
                        tracing::warn!(kind = %kind.name, error = %err, "claiming jobs failed");
                        Vec::new()
                    }
                };
                for claimed in claimed {
                    claimed_any = true;
                    let permit = kind
                        .slots
                        .clone()
                        .try_acquire_owned()
                        .expect("claimed no more jobs than free slots");
                    let id = claimed.id.clone();
                    let run = execute(
                        self.queue.clone(),
                        kind.handler.clone(),
                        kind.options.clone(),
                        claimed,
                        token.clone(),
                    );
                    let handle = running.spawn(async move {
                        run.await;
                        drop(permit);
                    });
                    in_flight.insert(handle.id(), (id, token.clone()));
                }
            }
            while let Some(finished) = running.try_join_next_with_id() {
                in_flight.remove(&finished_id(finished));
            }
            let has_free_slot = self.kinds.iter().any(|k| k.slots.available_permits() > 0);
            if claimed_any && has_free_slot {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = wake.notified() => {}
                Some(finished) = running.join_next_with_id(), if !running.is_empty() => {
                    in_flight.remove(&finished_id(finished));
                }
            }
        }

        drop(listener);
        tracing::info!(running = running.len(), "worker stopping: no new claims");
        let deadline = tokio::time::sleep(self.options.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                finished = running.join_next_with_id() => match finished {
                    Some(finished) => { in_flight.remove(&finished_id(finished)); }
                    None => break,
                },
                _ = &mut deadline => {
                    running.abort_all();
                    while let Some(finished) = running.join_next_with_id().await {
                        if let Ok((id, ())) = finished {
                            in_flight.remove(&id);
                        }
                    }
                    for (job, token) in in_flight.values() {
                        match self.queue.release(job, token).await {
                            Ok(_) => tracing::info!(%job, "released unfinished job"),
                            Err(err) => tracing::warn!(%job, error = %err, "release failed; the reaper will return it"),
                        }
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    async fn maintain(&self) {
        match self.queue.reap().await {
            Ok(0) => {}
            Ok(reaped) => tracing::warn!(reaped, "returned jobs with expired leases"),
            Err(err) => tracing::warn!(error = %err, "reaping expired leases failed"),
        }
        if let Err(err) = self.queue.purge(self.options.retention).await {
            tracing::warn!(error = %err, "purging done jobs failed");
        }
    }
}

/// Wakes the worker on every commit of a job for its queue (PostgreSQL LISTEN/NOTIFY).
/// Reconnects after a lost connection; polling covers the gap.
async fn listen(url: String, queue: String, wake: Arc<Notify>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for new jobs; polling only");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(crate::queue::CHANNEL).await {
            tracing::warn!(error = %err, "cannot LISTEN for new jobs; polling only");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        while let Ok(notification) = listener.recv().await {
            if notification.payload() == queue {
                wake.notify_one();
            }
        }
    }
}

fn finished_id(finished: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> tokio::task::Id {
    match finished {
        Ok((id, ())) => id,
        Err(err) => err.id(),
    }
}

/// Aborts the wrapped task when dropped, so an aborted run does not leave its handler behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one claimed job: the handler in a task of its own (a panic becomes a retry), the lease
/// extended every third of its length, and the outcome recorded under the claim's token.
async fn execute(
    queue: Queue,
    handler: Handler,
    options: KindOptions,
    claimed: Claimed,
    token: String,
) {
    let job = Job {
        payload: serde_json::from_str(&claimed.payload).unwrap_or(serde_json::Value::Null),
        attempt: u32::try_from(claimed.attempt).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(claimed.max_attempts).unwrap_or(u32::MAX),
        lease_until: claimed.lease_until,
        id: claimed.id,
        kind: claimed.kind,
    };
    let id = job.id.clone();
    let attempt = job.attempt;
    let mut work = AbortOnDrop(tokio::spawn(handler(job)));
    let mut heartbeat = tokio::time::interval(options.lease / 3);
    heartbeat.tick().await;
    let outcome = loop {
        tokio::select! {
            finished = &mut work.0 => break finished.unwrap_or_else(|err| {
                Outcome::retry(format!("handler panicked: {err}"))
            }),
            _ = heartbeat.tick() => match queue.extend(&id, &token, options.lease).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(job = %id, "lease lost while running; the outcome will be discarded"),
                Err(err) => tracing::warn!(job = %id, error = %err, "extending the lease failed"),
            },
        }
    };
    let recorded = match &outcome {
        Outcome::Done => queue.complete(&id, &token).await,
        Outcome::Retry { after, error } => {
            let delay = after.unwrap_or_else(|| options.schedule.delay_after(attempt));
            queue.retry_or_bury(&id, &token, delay, error, false).await
        }
        Outcome::Fail(error) => {
            queue
                .retry_or_bury(&id, &token, Duration::ZERO, error, true)
                .await
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(job = %id, ?outcome, "outcome discarded: the lease had passed to another run")
        }
        Err(err) => {
            tracing::warn!(job = %id, error = %err, "recording the outcome failed; the reaper will retry the job")
        }
    }
}
