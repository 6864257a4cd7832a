//! Workers: claim due jobs, run their handlers, record outcomes, keep leases alive, reap and
//! purge, and stop gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::handoff::{release_later, Handed, Taker};
use crate::queue::Want;
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
    /// Not now, and not a failure: run again after this delay without using up an attempt
    /// (a rate limit, a paused destination).
    Snooze(Duration),
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
    /// The enqueuer's in-memory context ([`crate::NewJob::local`]), on a run handed over at
    /// enqueue only.
    pub(crate) local: Option<crate::queue::Local>,
}

impl Job {
    /// The enqueuer's in-memory context when this run was handed over at enqueue and it is a `T`.
    pub fn local<T: std::any::Any>(&self) -> Option<&T> {
        self.local.as_deref()?.downcast_ref()
    }
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
    ///
    /// Outcomes are recorded by this loop, not by the handlers' tasks: each turn records every
    /// outcome that arrived and claims jobs for the free slots in one write transaction, so a
    /// busy worker commits once per turn rather than twice per job.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        // What this node's previous run held when it died is taken back now, not at lease end.
        match self.queue.release_node().await {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(released, "took back the jobs of this node's previous run")
            }
            Err(err) => tracing::warn!(error = %err, "could not take back the previous run's jobs"),
        }
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
        let mut finished: Vec<Finished> = Vec::new();
        let mut last_maintenance: Option<Instant> = None;
        let wake = self.queue.wake().clone();
        let listener = self.options.listen_url.clone().map(|url| {
            let wake = wake.clone();
            AbortOnDrop(tokio::spawn(listen(url, self.options.queue.clone(), wake)))
        });
        let mut handed = self.offer_kinds();
        tokio::pin!(shutdown);

        // A turn (record outcomes, claim for free slots) is due at start, on a wake-up, on the
        // poll interval and when outcomes wait. It runs beside the loop, so a job handed over
        // or finishing meanwhile is taken at once rather than after the turn's transaction.
        let mut turn = true;
        // Set while claims find jobs (or no room for them): more may be due. While it is clear,
        // a turn for outcomes alone does not claim.
        let mut backlog = false;
        let mut turning: Option<Pin<Box<dyn Future<Output = Turn> + Send + '_>>> = None;
        // A ticker, not a sleep renewed every iteration: a busy loop still polls on time, for
        // jobs that fall due without a wake-up (retries, scheduled runs).
        let mut poll = tokio::time::interval(self.options.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if turning.is_none()
                && last_maintenance
                    .is_none_or(|at| at.elapsed() >= self.options.maintenance_interval)
            {
                self.maintain().await;
                last_maintenance = Some(Instant::now());
            }
            while let Some(result) = running.try_join_next_with_id() {
                collect(result, &mut in_flight, &mut finished);
            }
            while let Ok(job) = handed.try_recv() {
                self.spawn(&mut running, &mut in_flight, job.job, job.token, job.permit);
            }
            if turning.is_none() && (turn || !finished.is_empty()) {
                // A turn for outcomes alone claims only when jobs may be waiting: new ones
                // always come with a wake-up or a hand-off.
                let claim = turn || backlog;
                turn = false;
                turning = Some(Box::pin(self.record_and_claim(
                    std::mem::take(&mut finished),
                    claim,
                    backlog,
                )));
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = poll.tick() => turn = true,
                _ = wake.notified() => turn = true,
                Some(job) = handed.recv() => {
                    self.spawn(&mut running, &mut in_flight, job.job, job.token, job.permit);
                }
                Some(result) = running.join_next_with_id(), if !running.is_empty() => {
                    collect(result, &mut in_flight, &mut finished);
                }
                done = async { turning.as_mut().expect("guarded").await }, if turning.is_some() => {
                    turning = None;
                    finished.extend(done.unrecorded);
                    if let Some(more_due) = done.more_due {
                        backlog = more_due;
                    }
                    let claimed_any = !done.claimed.is_empty();
                    for (job, token, permit) in done.claimed {
                        self.spawn(&mut running, &mut in_flight, job, token, permit);
                    }
                    if claimed_any && self.kinds.iter().any(|k| k.slots.available_permits() > 0) {
                        turn = true;
                    }
                }
            }
        }
        // A turn under way finishes: its outcomes are recorded, and what it claimed runs
        // within the shutdown timeout below like any running job.
        if let Some(turning) = turning.take() {
            let done = turning.await;
            finished.extend(done.unrecorded);
            for (job, token, permit) in done.claimed {
                self.spawn(&mut running, &mut in_flight, job, token, permit);
            }
        }

        drop(listener);
        self.withdraw_kinds();
        tracing::info!(running = running.len(), "worker stopping: no new claims");
        let deadline = tokio::time::sleep(self.options.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                result = running.join_next_with_id() => match result {
                    Some(result) => collect(result, &mut in_flight, &mut finished),
                    None => break,
                },
                _ = &mut deadline => {
                    running.abort_all();
                    while let Some(result) = running.join_next_with_id().await {
                        collect(result, &mut in_flight, &mut finished);
                    }
                    break;
                }
            }
        }
        let done = self.record_and_claim(finished, false, false).await;
        for unrecorded in done.unrecorded {
            tracing::warn!(job = %unrecorded.id, "outcome not recorded at shutdown; the job runs again");
        }
        // Jobs handed over since the loop ended never started: they go back unrun too.
        handed.close();
        let mut unfinished: Vec<(String, String)> = in_flight.into_values().collect();
        while let Ok(job) = handed.try_recv() {
            unfinished.push((job.job.id, job.token));
        }
        for (job, token) in &unfinished {
            match self.queue.release(job, token).await {
                Ok(_) => tracing::info!(%job, "released unfinished job"),
                Err(err) => {
                    tracing::warn!(%job, error = %err, "release failed; the reaper will return it")
                }
            }
        }
        Ok(())
    }

    /// Offers every registered kind for hand-off at enqueue (see the `handoff` module); the
    /// returned channel receives the handed jobs.
    fn offer_kinds(&self) -> mpsc::UnboundedReceiver<Handed> {
        let (to, handed) = mpsc::unbounded_channel();
        let mut takers = self.queue.takers().lock().expect("takers lock");
        for kind in &self.kinds {
            takers.insert(
                (self.options.queue.clone(), kind.name.clone()),
                Taker {
                    slots: kind.slots.clone(),
                    lease: kind.options.lease,
                    jobs: to.clone(),
                },
            );
        }
        handed
    }

    fn withdraw_kinds(&self) {
        let mut takers = self.queue.takers().lock().expect("takers lock");
        for kind in &self.kinds {
            takers.remove(&(self.options.queue.clone(), kind.name.clone()));
        }
    }

    /// Runs `job` in a task of its own, holding its slot until it finishes.
    fn spawn(
        &self,
        running: &mut JoinSet<Finished>,
        in_flight: &mut HashMap<tokio::task::Id, (String, String)>,
        job: Job,
        token: String,
        permit: OwnedSemaphorePermit,
    ) {
        let Some(kind) = self.kinds.iter().find(|k| k.name == job.kind) else {
            return;
        };
        let id = job.id.clone();
        let run = execute(
            self.queue.clone(),
            kind.handler.clone(),
            kind.options.clone(),
            job,
            token.clone(),
        );
        let handle = running.spawn(async move {
            let outcome = run.await;
            drop(permit);
            outcome
        });
        in_flight.insert(handle.id(), (id, token));
    }

    /// Records `finished` outcomes (each fenced by its lease token) and, when `claim` is set,
    /// claims due jobs for every free slot, all in one write transaction. If the transaction
    /// fails, the outcomes come back unrecorded, for the next turn.
    ///
    /// With a `backlog` (the last claim found jobs), the free slots are held through the turn,
    /// so that waiting jobs get them in their order before newer jobs handed over meanwhile.
    /// Without one, the claim is a look for jobs that fell due, which mostly finds none: the
    /// slots stay free for hand-offs during the transaction, and a claimed job takes its slot
    /// after the commit (one that finds none left goes back to the queue).
    async fn record_and_claim(&self, finished: Vec<Finished>, claim: bool, backlog: bool) -> Turn {
        let mut held: Vec<Option<OwnedSemaphorePermit>> = self
            .kinds
            .iter()
            .map(|k| {
                let free = k.slots.available_permits();
                if !(claim && backlog) || free == 0 {
                    return None;
                }
                k.slots.clone().try_acquire_many_owned(free as u32).ok()
            })
            .collect();
        let free: Vec<usize> = self
            .kinds
            .iter()
            .zip(&held)
            .map(|(k, held)| match held {
                Some(permits) => permits.num_permits(),
                None if claim => k.slots.available_permits(),
                None => 0,
            })
            .collect();
        // A claim wanted while some kind has every slot busy may leave that kind's jobs for
        // when a slot frees.
        let no_room = claim && free.contains(&0);
        if finished.is_empty() && free.iter().all(|n| *n == 0) {
            return Turn {
                more_due: no_room.then_some(true),
                ..Turn::default()
            };
        }
        let attempt = async {
            let mut tx = self.queue.begin_turn().await?;
            let completed: Vec<(&str, &str)> = finished
                .iter()
                .filter(|done| done.outcome == Outcome::Done)
                .map(|done| (done.id.as_str(), done.token.as_str()))
                .collect();
            let mut fenced = self.queue.complete(&mut tx, &completed).await?;
            for done in finished.iter() {
                let recorded = match &done.outcome {
                    Outcome::Done => continue,
                    Outcome::Retry { after, error } => {
                        let delay = after.unwrap_or_default();
                        self.queue
                            .retry_or_bury(&mut tx, &done.id, &done.token, delay, error, false)
                            .await?
                    }
                    Outcome::Snooze(delay) => {
                        self.queue
                            .snooze(&mut tx, &done.id, &done.token, *delay)
                            .await?
                    }
                    Outcome::Fail(error) => {
                        self.queue
                            .retry_or_bury(
                                &mut tx,
                                &done.id,
                                &done.token,
                                Duration::ZERO,
                                error,
                                true,
                            )
                            .await?
                    }
                };
                if !recorded {
                    fenced.push(done.id.clone());
                }
            }
            let wants: Vec<Want> = self
                .kinds
                .iter()
                .zip(&free)
                .filter(|(_, free)| **free > 0)
                .map(|(kind, free)| Want {
                    kind: &kind.name,
                    limit: *free,
                    lease: kind.options.lease,
                })
                .collect();
            let token = self.queue.lease_token();
            let claimed = self
                .queue
                .claim(&mut tx, &self.options.queue, &wants, &token)
                .await?;
            tx.commit().await?;
            Ok::<_, Error>((claimed, fenced, token))
        };
        match attempt.await {
            Ok((claimed, fenced, token)) => {
                let more_due = claim.then_some(no_room || !claimed.is_empty());
                for job in fenced {
                    tracing::warn!(%job, "outcome discarded: the lease had passed to another run");
                }
                let claimed = claimed
                    .into_iter()
                    .filter_map(|claimed| {
                        let kind = self.kinds.iter().position(|k| k.name == claimed.kind)?;
                        let slot = held[kind].as_mut().and_then(|permits| permits.split(1));
                        match slot
                            .or_else(|| self.kinds[kind].slots.clone().try_acquire_owned().ok())
                        {
                            Some(permit) => Some((claimed.into_job(), token.clone(), permit)),
                            // Its slot went to a job handed over during the turn.
                            None => {
                                release_later(&self.queue, claimed.id, token.clone());
                                None
                            }
                        }
                    })
                    .collect();
                Turn {
                    unrecorded: Vec::new(),
                    claimed,
                    more_due,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "recording outcomes and claiming failed; retrying");
                Turn {
                    unrecorded: finished,
                    claimed: Vec::new(),
                    more_due: None,
                }
            }
        }
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

/// Aborts the wrapped task when dropped, so an aborted run does not leave its handler behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a turn left: outcomes it could not record, and the jobs it claimed with their tokens
/// and slots.
#[derive(Default)]
struct Turn {
    unrecorded: Vec<Finished>,
    claimed: Vec<(Job, String, OwnedSemaphorePermit)>,
    /// Whether a claim was wanted and found jobs, or found some kind without a free slot:
    /// either way more jobs may be waiting. `None` when no claim was wanted.
    more_due: Option<bool>,
}

/// A handler's decision, ready to record: retry delays are resolved from the kind's schedule.
struct Finished {
    id: String,
    token: String,
    outcome: Outcome,
}

fn collect(
    result: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    in_flight: &mut HashMap<tokio::task::Id, (String, String)>,
    finished: &mut Vec<Finished>,
) {
    match result {
        Ok((task, done)) => {
            in_flight.remove(&task);
            finished.push(done);
        }
        // Aborted at shutdown: the job stays in `in_flight` and is released.
        Err(err) if err.is_cancelled() => {}
        Err(err) => {
            in_flight.remove(&err.id());
        }
    }
}

/// Runs one claimed job: the handler in a task of its own (a panic becomes a retry), with the
/// lease extended every third of its length. Returns the outcome for the worker to record.
async fn execute(
    queue: Queue,
    handler: Handler,
    options: KindOptions,
    job: Job,
    token: String,
) -> Finished {
    let id = job.id.clone();
    let attempt = job.attempt;
    let mut work = AbortOnDrop(tokio::spawn(handler(job)));
    // `interval_at`, not `interval`: an interval's immediate first tick still waits for the
    // timer wheel (about a millisecond), which would cap a single slot near 1,000 jobs/s.
    let every = options.lease / 3;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
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
    let outcome = match outcome {
        Outcome::Retry { after, error } => Outcome::Retry {
            after: Some(after.unwrap_or_else(|| options.schedule.delay_after(attempt))),
            error,
        },
        other => other,
    };
    Finished { id, token, outcome }
}
