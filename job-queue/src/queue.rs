//! The `jobs` table: enqueue, claim, the fenced outcomes, reaping, purging, replay and stats.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool, Row as _, Transaction};
use tokio::sync::Notify;

use crate::handoff::{Handed, Handoff, Taken, Takers};
use crate::{Engine, Error, Job, Now};

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// When the job may run first (Unix ms); `None` means now.
    pub run_at: Option<i64>,
    pub max_attempts: u32,
    /// A second enqueue with the same key on the same queue is a no-op returning the first job.
    pub dedupe_key: Option<String>,
    /// Higher runs first among jobs that are due.
    pub priority: i32,
    /// In-memory context for the handler, never stored: it reaches [`Job::local`] only when the
    /// job is handed over at enqueue (see [`Handoff`]), so a handler must do without it.
    pub(crate) local: Option<Local>,
}

/// What a job may carry in memory from its enqueue to its handler (see [`NewJob::local`]).
pub type Local = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl NewJob {
    /// A job on the `default` queue with 25 attempts, due now.
    pub fn new(kind: &str, payload: serde_json::Value) -> Self {
        Self {
            queue: "default".to_owned(),
            kind: kind.to_owned(),
            payload,
            run_at: None,
            max_attempts: 25,
            dedupe_key: None,
            priority: 0,
            local: None,
        }
    }

    pub fn on_queue(mut self, queue: &str) -> Self {
        self.queue = queue.to_owned();
        self
    }

    pub fn run_at(mut self, at_ms: i64) -> Self {
        self.run_at = Some(at_ms);
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Lets a handed-over run of this job read `context` through [`Job::local`] (for instance
    /// rows the enqueuing transaction has just read, to spare the handler a round trip).
    pub fn local(mut self, context: impl std::any::Any + Send + Sync) -> Self {
        self.local = Some(std::sync::Arc::new(context));
        self
    }
}

/// The result of an enqueue: the job's id, and whether an existing job was returned instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    pub duplicate: bool,
}

/// What a worker turn asks of one kind: up to `limit` due jobs, leased for `lease`.
pub(crate) struct Want<'a> {
    pub kind: &'a str,
    pub limit: usize,
    pub lease: Duration,
}

/// A claimed job as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Claimed {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub lease_until: i64,
}

impl Claimed {
    pub(crate) fn into_job(self) -> Job {
        Job {
            payload: serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null),
            attempt: u32::try_from(self.attempt).unwrap_or(u32::MAX),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(u32::MAX),
            lease_until: self.lease_until,
            id: self.id,
            kind: self.kind,
            local: None,
        }
    }
}

/// Counts for one kind of job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    pub queue: String,
    pub kind: String,
    pub available: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
    /// Age in ms of the oldest job that is due and not yet claimed (0 when none waits).
    pub oldest_available_age_ms: i64,
}

/// Counts for every kind of job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub kinds: Vec<KindStats>,
}

impl Stats {
    pub fn dead(&self) -> i64 {
        self.kinds.iter().map(|k| k.dead).sum()
    }
}

/// The PostgreSQL channel an enqueue notifies on commit, so idle workers on every node wake.
pub(crate) const CHANNEL: &str = "job_queue";

/// The INSERT of new jobs, up to its `VALUES` rows (bound by [`bind_job`]).
const INSERT_JOBS: &str = "INSERT INTO jobs (id, queue, kind, payload, state, priority, attempt,
    max_attempts, run_at, dedupe_key, lease_until, lease_token, created_at, updated_at) VALUES";
const ON_DUPLICATE: &str = "ON CONFLICT (queue, dedupe_key) DO NOTHING";
/// Parameters per row of [`INSERT_JOBS`].
const JOB_PARAMS: usize = 13;

/// The `VALUES` row of one new job, its parameters numbered from `$offset + 1`.
fn job_row(offset: usize) -> String {
    let p: [String; JOB_PARAMS] = std::array::from_fn(|column| format!("${}", offset + column + 1));
    let [id, queue, kind, payload, state, priority, attempt, max_attempts, run_at, dedupe_key, lease_until, token, now] =
        p;
    format!("({id}, {queue}, {kind}, {payload}, {state}, {priority}, {attempt}, {max_attempts}, {run_at}, {dedupe_key}, {lease_until}, {token}, {now}, {now})")
}

/// Binds one row of [`INSERT_JOBS`]: `available`, or `running` under the lease of `taken`.
fn bind_job<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    id: &str,
    job: &'q NewJob,
    now: i64,
    taken: Option<&Taken>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(id.to_owned())
        .bind(&job.queue)
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(if taken.is_some() {
            "running"
        } else {
            "available"
        })
        .bind(i64::from(job.priority))
        .bind(i64::from(taken.is_some()))
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(job.run_at.unwrap_or(now))
        .bind(&job.dedupe_key)
        .bind(taken.map(|t| t.lease_until))
        .bind(taken.map(|t| t.token.clone()))
        .bind(now)
}

/// A handle on the jobs table.
#[derive(Clone)]
pub struct Queue {
    pool: AnyPool,
    engine: Engine,
    now: Now,
    wake: Arc<Notify>,
    takers: Takers,
    /// This node's identity, the prefix of every lease token it issues (empty: none).
    node: Arc<str>,
}

const CLAIMED_COLUMNS: &str = "id, kind, payload, attempt, max_attempts, lease_until";

impl Queue {
    pub fn new(pool: AnyPool, engine: Engine, now: Now) -> Self {
        Self {
            pool,
            engine,
            now,
            wake: Arc::new(Notify::new()),
            takers: Takers::default(),
            node: Arc::from(""),
        }
    }

    /// This queue's leases name `node`, an identity that survives restarts (not `/`), so a
    /// restarted node can take back at once what its previous run held
    /// ([`Queue::release_node`]) instead of waiting out the leases.
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = Arc::from(node.replace('/', "_"));
        self
    }

    /// A fresh lease token: `node/ulid`.
    pub(crate) fn lease_token(&self) -> String {
        let ulid = ulid::Ulid::new();
        if self.node.is_empty() {
            ulid.to_string()
        } else {
            format!("{}/{ulid}", self.node)
        }
    }

    /// Returns to `available` (or `dead`, their attempts spent) the jobs an earlier run of this
    /// node held when it stopped without releasing them. Their lease tokens are cleared, so if
    /// that run is in fact alive (two processes given one identity), its finishers are fenced
    /// off as after a reap. Returns how many.
    pub async fn release_node(&self) -> Result<u64, Error> {
        if self.node.is_empty() {
            return Ok(0);
        }
        let pattern = format!(
            "{}/%",
            self.node
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let now = self.now();
        let released = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END,
                 last_error = 'the node restarted while running it',
                 lease_until = NULL, lease_token = NULL, updated_at = $1
             WHERE state = 'running' AND lease_token LIKE $2 ESCAPE '\\'",
        )
        .bind(now)
        .bind(pattern)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Wakes this process's idle workers. [`Queue::enqueue`] does it after committing; call it
    /// after committing a transaction that used [`Queue::enqueue_in`]. (On PostgreSQL workers
    /// with a listener are also woken by the commit itself, on every node.)
    pub fn committed(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    pub(crate) fn takers(&self) -> &Takers {
        &self.takers
    }

    /// A free slot of this process's worker for `job`, if one takes its kind and it is due.
    fn take(&self, job: &NewJob, now: i64) -> Option<Taken> {
        if job.run_at.is_some_and(|at| at > now) {
            return None;
        }
        let takers = self.takers.lock().expect("takers lock");
        let taker = takers.get(&(job.queue.clone(), job.kind.clone()))?;
        let permit = taker.slots.clone().try_acquire_owned().ok()?;
        Some(Taken {
            token: self.lease_token(),
            lease_until: now + taker.lease.as_millis() as i64,
            permit,
            to: taker.jobs.clone(),
        })
    }

    pub fn now(&self) -> i64 {
        (self.now)()
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Enqueues `job` in the caller's transaction: it exists if and only if that commits.
    /// (Through [`Handoff::enqueue_in`] it may also go straight to this process's worker.)
    pub async fn enqueue_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: NewJob,
    ) -> Result<Enqueued, Error> {
        self.enqueue_one(tx, job, None).await
    }

    /// An empty [`Handoff`], to enqueue through and start once the transaction has committed.
    pub fn handoff(&self) -> Handoff {
        Handoff::new(self.clone())
    }

    pub(crate) async fn enqueue_one(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: NewJob,
        handoff: Option<&mut Handoff>,
    ) -> Result<Enqueued, Error> {
        let new = self.insert(tx, std::slice::from_ref(&job), handoff).await?;
        if let Some(Some(id)) = new.into_iter().next() {
            return Ok(Enqueued {
                id,
                duplicate: false,
            });
        }
        let (existing,): (String,) =
            sqlx::query_as("SELECT id FROM jobs WHERE queue = $1 AND dedupe_key = $2")
                .bind(&job.queue)
                .bind(&job.dedupe_key)
                .fetch_one(&mut **tx)
                .await?;
        Ok(Enqueued {
            id: existing,
            duplicate: true,
        })
    }

    /// Inserts `jobs` with one statement per 500, skipping those whose dedupe key exists already
    /// on their queue. With a `handoff`, new jobs that are due are leased to this process's
    /// worker when it has a free slot for their kind; workers are notified of the others.
    /// Returns each job's id, `None` for a duplicate.
    pub(crate) async fn insert(
        &self,
        tx: &mut Transaction<'static, Any>,
        jobs: &[NewJob],
        mut handoff: Option<&mut Handoff>,
    ) -> Result<Vec<Option<String>>, Error> {
        let now = self.now();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut unhanded = false;
        for chunk in jobs.chunks(500) {
            let rows: Vec<(String, &NewJob, Option<Taken>)> = chunk
                .iter()
                .map(|job| {
                    let taken = handoff.as_ref().and_then(|_| self.take(job, now));
                    (format!("job_{}", ulid::Ulid::new()), job, taken)
                })
                .collect();
            let values: Vec<String> = (0..chunk.len()).map(|n| job_row(n * JOB_PARAMS)).collect();
            let sql = format!(
                "{INSERT_JOBS} {} {ON_DUPLICATE} RETURNING id",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (id, job, taken) in &rows {
                query = bind_job(query, id, job, now, taken.as_ref());
            }
            let new = query
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<std::collections::HashSet<String>, _>>()?;
            for (id, job, taken) in rows {
                if !new.contains(&id) {
                    ids.push(None); // A duplicate: its slot, if it took one, is free again.
                    continue;
                }
                match (taken, handoff.as_deref_mut()) {
                    (Some(taken), Some(handoff)) => handoff.push(Handed {
                        job: Job {
                            id: id.clone(),
                            kind: job.kind.clone(),
                            payload: job.payload.clone(),
                            attempt: 1,
                            max_attempts: job.max_attempts.max(1),
                            lease_until: taken.lease_until,
                            local: job.local.clone(),
                        },
                        token: taken.token,
                        permit: taken.permit,
                        to: taken.to,
                    }),
                    _ => unhanded = true,
                }
                ids.push(Some(id));
            }
        }
        if unhanded {
            if let Some(handoff) = handoff {
                handoff.wake_on_start();
            }
            let mut queues: Vec<&str> = jobs.iter().map(|job| job.queue.as_str()).collect();
            queues.sort_unstable();
            queues.dedup();
            for queue in queues {
                self.notify_in(tx, queue).await?;
            }
        }
        Ok(ids)
    }

    /// On PostgreSQL, notifies the workers of every node listening for `queue` when (and only
    /// if) the caller's transaction commits.
    async fn notify_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        queue: &str,
    ) -> Result<(), Error> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(queue)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Enqueues `job` in a transaction of its own.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, Error> {
        let mut tx = self.begin_write().await?;
        let enqueued = self.enqueue_in(&mut tx, job).await?;
        tx.commit().await?;
        self.committed();
        Ok(enqueued)
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
    }

    /// A worker turn's transaction (outcomes and claims). On PostgreSQL its commit does not wait
    /// for the disk flush: losing it in a database crash loses claims (their jobs are still
    /// available) and done marks (their jobs run again, as after a worker crash), and a later
    /// flushed commit flushes it too. SQLite in WAL mode with `synchronous = NORMAL` never waits.
    pub(crate) async fn begin_turn(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => {
                self.pool
                    .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
                    .await
            }
        }
    }

    /// Claims due jobs for several kinds at once (`wants`: kind, how many, lease), leasing
    /// them under `token`. One statement, whatever the number of kinds.
    pub(crate) async fn claim(
        &self,
        tx: &mut Transaction<'static, Any>,
        queue: &str,
        wants: &[Want<'_>],
        token: &str,
    ) -> Result<Vec<Claimed>, Error> {
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        // SQLite serialises writers, so the sub-selects cannot hand one job to two claimers;
        // PostgreSQL skips rows another claimer has locked instead of waiting for them.
        let lock = match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        // $1 now, $2 token, $3 queue; then per kind: name, limit, lease end.
        let mut ctes = Vec::with_capacity(wants.len());
        let mut picked = Vec::with_capacity(wants.len());
        let mut leases = String::new();
        for (n, _) in wants.iter().enumerate() {
            let (kind, limit, lease) = (4 + 3 * n, 5 + 3 * n, 6 + 3 * n);
            ctes.push(format!(
                "c{n} AS (SELECT id FROM jobs
                          WHERE queue = $3 AND kind = ${kind} AND state = 'available' AND run_at <= $1
                          ORDER BY priority DESC, run_at, id
                          LIMIT ${limit} {lock})"
            ));
            picked.push(format!("SELECT id FROM c{n}"));
            leases.push_str(&format!(" WHEN ${kind} THEN ${lease}"));
        }
        let sql = format!(
            "WITH {}
             UPDATE jobs SET state = 'running', attempt = attempt + 1,
                             lease_until = CASE kind{leases} END,
                             lease_token = $2, updated_at = $1
             WHERE id IN ({})
             RETURNING {CLAIMED_COLUMNS}",
            ctes.join(", "),
            picked.join(" UNION ALL "),
        );
        let mut query = sqlx::query_as(&sql).bind(now).bind(token).bind(queue);
        for want in wants {
            query = query
                .bind(want.kind)
                .bind(want.limit as i64)
                .bind(now + want.lease.as_millis() as i64);
        }
        Ok(query.fetch_all(&mut **tx).await?)
    }

    /// Marks jobs done, each only if its token (`(id, token)` pairs) still holds its lease.
    /// Returns the ids that were fenced off.
    pub(crate) async fn complete(
        &self,
        tx: &mut Transaction<'static, Any>,
        jobs: &[(&str, &str)],
    ) -> Result<Vec<String>, Error> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        // Each fenced by its own token: a job has one only while it runs (every way out of
        // `running` clears it), so the state need not be named, and PostgreSQL finds the rows
        // by their key rather than by scanning the `running` index, whatever statistics it has.
        // The list is padded to a power of two by repeating the last job, so a worker prepares
        // a few statements, not one per batch size.
        let rows = jobs.len().next_power_of_two();
        let ids: Vec<String> = (0..rows).map(|n| format!("${}", 2 + 2 * n)).collect();
        let tokens: String = (0..rows)
            .map(|n| format!(" WHEN ${} THEN ${}", 2 + 2 * n, 3 + 2 * n))
            .collect();
        let sql = format!(
            "UPDATE jobs SET state = 'done', finished_at = $1, updated_at = $1,
                             lease_until = NULL, lease_token = NULL, last_error = NULL
             WHERE id IN ({}) AND lease_token = CASE id{tokens} END
             RETURNING id",
            ids.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(now);
        let last = jobs[jobs.len() - 1];
        for (id, token) in jobs.iter().chain(std::iter::repeat(&last)).take(rows) {
            query = query.bind(*id).bind(*token);
        }
        let done: std::collections::HashSet<String> = query
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        Ok(jobs
            .iter()
            .filter(|(id, _)| !done.contains(*id))
            .map(|(id, _)| (*id).to_owned())
            .collect())
    }

    /// Schedules the next attempt `delay` from now, or buries the job when its attempts are
    /// spent (or `dead` is set). Fenced by `token`.
    pub(crate) async fn retry_or_bury(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        token: &str,
        delay: Duration,
        error: &str,
        dead: bool,
    ) -> Result<bool, Error> {
        let now = self.now();
        let updated = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN $1 = 1 OR attempt >= max_attempts THEN 'dead' ELSE 'available' END,
                 finished_at = CASE WHEN $1 = 1 OR attempt >= max_attempts THEN $2 ELSE NULL END,
                 run_at = $3, last_error = $4, updated_at = $2,
                 lease_until = NULL, lease_token = NULL
             WHERE id = $5 AND lease_token = $6 AND state = 'running'",
        )
        .bind(i64::from(dead))
        .bind(now)
        .bind(now + delay.as_millis() as i64)
        .bind(truncate(error))
        .bind(id)
        .bind(token)
        .execute(&mut **tx)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Puts a job back to run after `delay` without counting the attempt. Fenced by `token`.
    pub(crate) async fn snooze(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        token: &str,
        delay: Duration,
    ) -> Result<bool, Error> {
        let now = self.now();
        let snoozed = sqlx::query(
            "UPDATE jobs SET state = 'available', attempt = attempt - 1, run_at = $1, updated_at = $2,
                             lease_until = NULL, lease_token = NULL
             WHERE id = $3 AND lease_token = $4 AND state = 'running'",
        )
        .bind(now + delay.as_millis() as i64)
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&mut **tx)
        .await?;
        Ok(snoozed.rows_affected() == 1)
    }

    /// Gives a job back unfinished (shutdown): available now, and the attempt does not count.
    pub(crate) async fn release(&self, id: &str, token: &str) -> Result<bool, Error> {
        let now = self.now();
        let released = sqlx::query(
            "UPDATE jobs SET state = 'available', attempt = attempt - 1, run_at = $1, updated_at = $1,
                             lease_until = NULL, lease_token = NULL
             WHERE id = $2 AND lease_token = $3 AND state = 'running'",
        )
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected() == 1)
    }

    /// Extends a held lease to `lease` from now. Returns false when the lease was lost.
    pub(crate) async fn extend(
        &self,
        id: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        let now = self.now();
        let extended = sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2
             WHERE id = $3 AND lease_token = $4 AND state = 'running'",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(extended.rows_affected() == 1)
    }

    /// Returns jobs whose lease expired to `available` (or `dead` when their attempts are
    /// spent). Their late finishers are fenced off by the cleared token. Returns how many.
    pub async fn reap(&self) -> Result<u64, Error> {
        let now = self.now();
        let reaped = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END,
                 last_error = 'lease expired: the worker stopped or stalled',
                 lease_until = NULL, lease_token = NULL, updated_at = $1
             WHERE state = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(reaped.rows_affected())
    }

    /// Deletes done jobs finished more than `retention` ago. Dead jobs are kept.
    pub async fn purge(&self, retention: Duration) -> Result<u64, Error> {
        let cutoff = self.now() - retention.as_millis() as i64;
        let purged = sqlx::query("DELETE FROM jobs WHERE state = 'done' AND finished_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(purged.rows_affected())
    }

    /// Puts a dead job back to work with a fresh set of attempts. Returns false unless the job
    /// exists and is dead.
    pub async fn replay(&self, id: &str) -> Result<bool, Error> {
        let now = self.now();
        let replayed = sqlx::query(
            "UPDATE jobs SET state = 'available', attempt = 0, run_at = $1, updated_at = $1,
                             finished_at = NULL
             WHERE id = $2 AND state = 'dead'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(replayed.rows_affected() == 1)
    }

    /// How many jobs whose dedupe key starts with `prefix` are waiting (available or running)
    /// and dead: one owner's share of a kind, when its keys name the owner.
    pub async fn count_by_dedupe_prefix(&self, prefix: &str) -> Result<(i64, i64), Error> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let (waiting, dead): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN state IN ('available', 'running') THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0)
             FROM jobs WHERE dedupe_key LIKE $1 ESCAPE '\\'",
        )
        .bind(pattern)
        .fetch_one(&self.pool)
        .await?;
        Ok((waiting, dead))
    }

    /// Counts by queue, kind and state, and the age of the oldest due job per kind.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let now = self.now();
        let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT queue, kind, state, COUNT(*),
                    MIN(CASE WHEN state = 'available' AND run_at <= $1 THEN run_at END)
             FROM jobs GROUP BY queue, kind, state ORDER BY queue, kind",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut kinds: Vec<KindStats> = Vec::new();
        for (queue, kind, state, count, oldest_due) in rows {
            if !kinds
                .last()
                .is_some_and(|k| k.queue == queue && k.kind == kind)
            {
                kinds.push(KindStats {
                    queue,
                    kind,
                    ..KindStats::default()
                });
            }
            let entry = kinds.last_mut().expect("pushed above");
            match state.as_str() {
                "available" => entry.available = count,
                "running" => entry.running = count,
                "done" => entry.done = count,
                _ => entry.dead = count,
            }
            if let Some(oldest) = oldest_due {
                entry.oldest_available_age_ms = now - oldest;
            }
        }
        Ok(Stats { kinds })
    }
}

/// Errors are stored for operators, not archived: 2 KiB is plenty.
fn truncate(error: &str) -> &str {
    let mut end = error.len().min(2048);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}
