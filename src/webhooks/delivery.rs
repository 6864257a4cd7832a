//! The whole delivery path in one place: fan-out of a message to its endpoints (and, for
//! `commission.*` messages, to the partner's postbacks: see `postbacks`), then for each
//! delivery: sign, POST, record the attempt and the endpoint's counters, and decide what next.
//!
//! - 2xx succeeds. Anything else fails, 3xx included (redirects are never followed).
//! - 410 Gone disables the endpoint at once: the receiver told us it is gone.
//! - An endpoint that has failed without a single success for longer than the disable window
//!   (`SWITCHYARD_WEBHOOK_DISABLE_AFTER_HOURS`) is disabled, with the reason on its record.
//! - Retries follow the schedule 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (±20%) after the first,
//!   immediate attempt; a `Retry-After` on 429/503 replaces the scheduled delay, within 1 s to
//!   10 h. Delays are stored by the job queue, so they survive restarts. After the eighth attempt
//!   the delivery is failed and its job dead (visible on `/v1/queue`).
//! - An endpoint's `rate_limit` (deliveries per second) is enforced on its row, across nodes:
//!   a delivery over the limit, like one to a paused endpoint, waits without using an attempt.
//!
//! Fan-outs, delivery reads and successful attempts of the jobs running at once are each done
//! in one transaction ([`Batches`], ADR 9).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use job_queue::{Job, KindOptions, NewJob, Outcome, Queue, RetrySchedule, Worker};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::clock::{rfc3339, Clock};
use crate::db::{Db, GroupCommit, Tx, TENANT_SETTING};
use crate::ids;

use super::{signing, store};

pub const DISPATCH: &str = "webhooks.dispatch";
pub const DELIVER: &str = "webhooks.deliver";
/// Messages fanned out in one transaction at most, and dispatch jobs running at once.
const DISPATCH_BATCH: usize = 64;
/// The first attempt and seven retries.
pub const MAX_ATTEMPTS: u32 = 8;
const RETRY_DELAYS_SECS: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
const RETRY_AFTER_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(36_000));
/// How often the deliveries of a paused endpoint look again (they wait, using no attempt).
const PAUSED_RECHECK: Duration = Duration::from_secs(60);
/// How much of a receiver's answer an attempt keeps.
const RESPONSE_KEPT_BYTES: usize = 4096;

/// Registers the dispatch and delivery handlers on `worker`.
pub fn register(worker: Worker, state: AppState) -> Worker {
    let dispatch_state = state.clone();
    let lease = Duration::from_secs(state.config.job_lease_secs);
    worker
        .register(
            DISPATCH,
            KindOptions {
                // A dispatch job waits for its group commit, which takes up to this many: as
                // many slots let one full batch form, and the jobs emitted meanwhile be handed
                // over rather than claimed.
                concurrency: DISPATCH_BATCH,
                lease,
                ..KindOptions::default()
            },
            move |job| dispatch(dispatch_state.clone(), job),
        )
        .register(
            DELIVER,
            KindOptions {
                concurrency: state.config.webhook_concurrency as usize,
                schedule: RetrySchedule::Fixed {
                    delays: RETRY_DELAYS_SECS
                        .iter()
                        .map(|s| Duration::from_secs(*s))
                        .collect(),
                    jitter_percent: 20,
                },
                lease,
            },
            move |job| deliver(state.clone(), job),
        )
}

/// A message to fan out, as its dispatch job names it.
#[derive(Deserialize)]
pub struct DispatchPayload {
    tenant_id: String,
    message_id: String,
}

#[derive(Deserialize)]
struct DeliverPayload {
    tenant_id: String,
    delivery_id: String,
}

async fn dispatch(state: AppState, job: Job) -> Outcome {
    let Ok(payload) = serde_json::from_value::<DispatchPayload>(job.payload) else {
        return Outcome::Fail("malformed dispatch payload".to_owned());
    };
    if state.webhooks.dispatch.submit(payload).await == Some(true) {
        Outcome::Done
    } else {
        Outcome::retry("the fan-out did not commit, or its message was not found")
    }
}

/// A delivery to read for its attempt.
pub struct ToRead {
    tenant_id: String,
    delivery_id: String,
}

/// The delivery path's batches, each handled by a task of its own (see [`GroupCommit`]).
pub struct Batches {
    /// Fan-outs: each dispatch job learns whether its message was fanned out.
    pub dispatch: GroupCommit<DispatchPayload>,
    /// Reads for claimed deliveries (handed-over ones carry what they need): each learns its
    /// delivery with message and endpoint, `None` when missing or its endpoint deleted.
    pub reads: GroupCommit<ToRead, Option<store::DeliveryToAttempt>>,
    /// Successful attempts: each learns whether its record committed.
    pub successes: GroupCommit<store::Success>,
}

impl Batches {
    pub fn start(db: Db, queue: Queue, clock: Clock) -> Self {
        Self {
            dispatch: dispatcher(db.clone(), queue, clock),
            reads: reader(db.clone()),
            successes: success_recorder(db),
        }
    }
}

/// The group commit that fans out the messages of every dispatch job running at once in one
/// transaction (see [`fan_out`]): under load, a message's statements are shared with its
/// neighbours'.
fn dispatcher(db: Db, queue: Queue, clock: Clock) -> GroupCommit<DispatchPayload> {
    GroupCommit::start(DISPATCH_BATCH, move |messages: Vec<DispatchPayload>| {
        let (db, queue, clock) = (db.clone(), queue.clone(), clock.clone());
        async move {
            match fan_out(&db, &queue, &clock, &messages).await {
                Ok(done) => messages
                    .iter()
                    .map(|m| done.contains(&m.message_id))
                    .collect(),
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), messages = messages.len(), "fanning messages out failed");
                    vec![false; messages.len()]
                }
            }
        }
    })
}

/// The group read of deliveries about to be attempted: under load, one query reads many.
fn reader(db: Db) -> GroupCommit<ToRead, Option<store::DeliveryToAttempt>> {
    GroupCommit::start(128, move |wanted: Vec<ToRead>| {
        let db = db.clone();
        async move {
            match read_deliveries(&db, &wanted).await {
                Ok(mut found) => wanted
                    .iter()
                    .map(|w| found.remove(&w.delivery_id))
                    .collect(),
                Err(err) => {
                    // Each caller's job retries.
                    tracing::warn!(error = %err, deliveries = wanted.len(), "reading deliveries failed");
                    Vec::new()
                }
            }
        }
    })
}

async fn read_deliveries(
    db: &Db,
    wanted: &[ToRead],
) -> sqlx::Result<HashMap<String, store::DeliveryToAttempt>> {
    let groups = crate::db::by_tenant(wanted, |w| &w.tenant_id);
    let mut found = HashMap::new();
    let Some((first, _)) = groups.first() else {
        return Ok(found);
    };
    let mut tx = db.read(first).await?;
    for (n, (tenant, batch)) in groups.iter().enumerate() {
        if n > 0 {
            db.set_local(&mut tx, TENANT_SETTING, tenant).await?;
        }
        let ids: Vec<&str> = batch.iter().map(|w| w.delivery_id.as_str()).collect();
        for row in store::deliveries_to_attempt(&mut tx, tenant, &ids).await? {
            found.insert(row.delivery_id, row.target);
        }
    }
    tx.commit().await?;
    Ok(found)
}

/// One delivery (and its job) per subscribed endpoint of each message; returns the ids of the
/// messages found. Running it again creates nothing twice: a delivery is unique per (message,
/// endpoint) and its job per delivery.
///
/// Deliveries go straight to this node's worker when it has free slots (no claim, no wake-up):
/// the handoff starts them once the fan-out has committed, each with the message and endpoint
/// read here, so its first attempt reads nothing.
async fn fan_out(
    db: &Db,
    queue: &Queue,
    clock: &Clock,
    messages: &[DispatchPayload],
) -> anyhow::Result<HashSet<String>> {
    let groups = crate::db::by_tenant(messages, |m| &m.tenant_id);
    let mut done = HashSet::new();
    let Some((first, _)) = groups.first() else {
        return Ok(done);
    };
    let now = clock.now_ms();
    let mut tx = db.write_unflushed(first).await?;
    let mut handoff = queue.handoff();
    for (n, (tenant, batch)) in groups.iter().enumerate() {
        if n > 0 {
            db.set_local(&mut tx, TENANT_SETTING, tenant).await?;
        }
        let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
        let found = store::find_messages(&mut tx, tenant, &ids).await?;
        done.extend(found.iter().map(|m| m.id.clone()));
        let mut subscribers: HashMap<&str, Vec<store::StoredEndpoint>> = HashMap::new();
        for message in &found {
            let data: serde_json::Value = serde_json::from_str(&message.payload)?;
            crate::postbacks::fan_out(
                queue,
                &mut tx,
                tenant,
                &message.id,
                &message.event_type,
                &data,
                now,
            )
            .await?;
            if !subscribers.contains_key(message.event_type.as_str()) {
                let endpoints =
                    store::subscribed_endpoints(&mut tx, tenant, &message.event_type).await?;
                subscribers.insert(&message.event_type, endpoints);
            }
        }
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for message in &found {
            for endpoint in &subscribers[message.event_type.as_str()] {
                rows.push(store::NewDelivery {
                    id: ids::new("dlv"),
                    message_id: &message.id,
                    endpoint_id: &endpoint.id,
                });
                targets.push((message, endpoint));
            }
        }
        let created: HashSet<String> =
            store::insert_deliveries(&mut tx, db.dialect(), tenant, &rows, now)
                .await?
                .into_iter()
                .collect();
        let jobs: Vec<NewJob> = rows
            .iter()
            .zip(targets)
            .filter(|(delivery, _)| created.contains(&delivery.id))
            .map(|(delivery, (message, endpoint))| {
                delivery_job(tenant, &delivery.id, &format!("deliver:{}", delivery.id)).local(
                    store::DeliveryToAttempt {
                        delivery_status: "pending".to_owned(),
                        message_id: message.id.clone(),
                        event_type: message.event_type.clone(),
                        payload: message.payload.clone(),
                        message_created_at: message.created_at,
                        endpoint: endpoint.clone(),
                    },
                )
            })
            .collect();
        handoff.enqueue_all_in(&mut tx, &jobs).await?;
    }
    tx.commit().await?;
    handoff.start();
    Ok(done)
}

/// Enqueues the delivery job of a pending delivery, in the caller's transaction. `dedupe_key`
/// names this run of it: the first one, or a replay.
pub async fn schedule(
    state: &AppState,
    tx: &mut Tx,
    tenant_id: &str,
    delivery_id: &str,
    dedupe_key: &str,
) -> anyhow::Result<()> {
    let job = delivery_job(tenant_id, delivery_id, dedupe_key);
    state.queue.enqueue_in(tx, job).await?;
    Ok(())
}

fn delivery_job(tenant_id: &str, delivery_id: &str, dedupe_key: &str) -> NewJob {
    NewJob::new(
        DELIVER,
        json!({ "tenant_id": tenant_id, "delivery_id": delivery_id }),
    )
    .max_attempts(MAX_ATTEMPTS)
    .dedupe_key(dedupe_key)
}

/// A test fire: a message carrying `data` (a synthetic payload) and its delivery to this one
/// endpoint, whatever its filter, attempted once, now. Returns the delivery id.
pub async fn fire_test(
    state: &AppState,
    tenant_id: &str,
    endpoint_id: &str,
    event_type: &str,
    data: &serde_json::Value,
) -> anyhow::Result<String> {
    let message = ids::new("msg");
    let now = state.clock.now_ms();
    let mut tx = state.db.write(tenant_id).await?;
    store::insert_message(
        &mut tx,
        &message,
        tenant_id,
        event_type,
        &data.to_string(),
        now,
    )
    .await?;
    let delivery = ids::new("dlv");
    let rows = [store::NewDelivery {
        id: delivery.clone(),
        message_id: &message,
        endpoint_id,
    }];
    store::insert_deliveries(&mut tx, state.db.dialect(), tenant_id, &rows, now).await?;
    tx.commit().await?;
    let payload = DeliverPayload {
        tenant_id: tenant_id.to_owned(),
        delivery_id: delivery.clone(),
    };
    if let Some(target) = load(state, &payload, now).await? {
        attempt(state, &payload, &target, true).await?;
    }
    Ok(delivery)
}

async fn deliver(state: AppState, job: Job) -> Outcome {
    let Ok(payload) = DeliverPayload::deserialize(&job.payload) else {
        return Outcome::Fail("malformed delivery payload".to_owned());
    };
    let loaded;
    // Handed over by its fan-out, a first attempt has its rows already (see `fan_out`).
    let target = match job.local::<store::DeliveryToAttempt>() {
        Some(target) => target,
        None => match load(&state, &payload, state.clock.now_ms()).await {
            Ok(Some(target)) => {
                loaded = target;
                &loaded
            }
            Ok(None) => return Outcome::Done,
            Err(err) => return could_not_attempt(err),
        },
    };
    attempt(&state, &payload, target, job.attempt >= job.max_attempts)
        .await
        .unwrap_or_else(could_not_attempt)
}

fn could_not_attempt(err: anyhow::Error) -> Outcome {
    Outcome::retry(format!("delivery could not be attempted: {err:#}"))
}

/// What the receiver (or the network) answered.
struct Answer {
    status: Option<u16>,
    error_class: Option<&'static str>,
    body: String,
    retry_after: Option<Duration>,
    latency: Duration,
}

/// The pending delivery with its message and endpoint; `None` when there is nothing to attempt:
/// it is finished, or its endpoint is gone (the delivery is then failed).
async fn load(
    state: &AppState,
    payload: &DeliverPayload,
    now: i64,
) -> anyhow::Result<Option<store::DeliveryToAttempt>> {
    let tenant = &payload.tenant_id;
    let read = ToRead {
        tenant_id: tenant.clone(),
        delivery_id: payload.delivery_id.clone(),
    };
    let found = state
        .webhooks
        .reads
        .submit(read)
        .await
        .ok_or_else(|| anyhow::anyhow!("the delivery could not be read"))?;
    let Some(found) = found else {
        // The delivery is unknown, or its endpoint was deleted.
        let mut tx = state.db.read(tenant).await?;
        let delivery = store::find_delivery(&mut tx, tenant, &payload.delivery_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("delivery {} not found", payload.delivery_id))?;
        tx.commit().await?;
        if delivery.status == "pending" {
            give_up(state, tenant, &delivery.id, now).await?;
        }
        return Ok(None);
    };
    Ok((found.delivery_status == "pending").then_some(found))
}

async fn attempt(
    state: &AppState,
    payload: &DeliverPayload,
    found: &store::DeliveryToAttempt,
    last_attempt: bool,
) -> anyhow::Result<Outcome> {
    let tenant = &payload.tenant_id;
    let now = state.clock.now_ms();
    let endpoint = &found.endpoint;
    match endpoint.status.as_str() {
        "enabled" => {}
        "paused" => return Ok(Outcome::Snooze(PAUSED_RECHECK)),
        _ => {
            give_up(state, tenant, &payload.delivery_id, now).await?;
            return Ok(Outcome::Done);
        }
    }
    let delivery_id = &payload.delivery_id;

    if let Some(per_second) = endpoint.rate_limit {
        let mut tx = state.db.write(tenant).await?;
        let wait = store::take_rate_slot(&mut tx, tenant, &endpoint.id, per_second, now).await?;
        tx.commit().await?;
        if let Some(wait) = wait {
            return Ok(Outcome::Snooze(Duration::from_millis(wait as u64)));
        }
    }

    let body = json!({
        "id": found.message_id,
        "type": found.event_type,
        "timestamp": rfc3339(found.message_created_at),
        "data": serde_json::from_str::<serde_json::Value>(&found.payload)?,
    })
    .to_string();
    let mut secrets = vec![state.secrets.open(&endpoint.secret)?];
    if let (Some(previous), Some(until)) =
        (&endpoint.previous_secret, endpoint.previous_secret_until)
    {
        if until > now {
            secrets.push(state.secrets.open(previous)?);
        }
    }
    let timestamp = now / 1000;
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let signature =
        signing::signature_header(&secrets, &found.message_id, timestamp, body.as_bytes())
            .ok_or_else(|| anyhow::anyhow!("endpoint {} has a malformed secret", endpoint.id))?;
    let answer = send(
        state,
        &endpoint.url,
        &found.message_id,
        timestamp,
        &signature,
        body,
    )
    .await;

    let attempt_id = ids::new("att");
    let latency_ms = answer.latency.as_millis() as i64;
    if let Some(code) = answer.status.filter(|s| (200..300).contains(s)) {
        let recorded = state
            .webhooks
            .successes
            .submit(store::Success {
                attempt_id,
                tenant_id: tenant.clone(),
                delivery_id: delivery_id.clone(),
                endpoint_id: endpoint.id.clone(),
                status_code: i64::from(code),
                latency_ms,
                response_body: answer.body,
                at: now,
            })
            .await;
        return Ok(if recorded == Some(true) {
            Outcome::Done
        } else {
            // Sent again later: receivers deduplicate on the message id.
            Outcome::retry("the successful attempt could not be recorded")
        });
    }

    let status = answer.status.map(i64::from);
    let mut tx = state.db.write(tenant).await?;
    store::insert_attempt(
        &mut tx,
        &store::AttemptRecord {
            id: &attempt_id,
            tenant_id: tenant,
            delivery_id,
            endpoint_id: &endpoint.id,
            status_code: status,
            error_class: answer.error_class,
            latency_ms,
            response_body: &answer.body,
            at: now,
        },
    )
    .await?;
    let window = Duration::from_secs(state.config.webhook_disable_after_hours * 3600);
    let disabled = store::count_failure(
        &mut tx,
        tenant,
        &endpoint.id,
        status,
        now,
        now - window.as_millis() as i64,
        (answer.status == Some(410)).then_some("the receiver answered 410 Gone"),
    )
    .await?;
    let failed = disabled || last_attempt;
    let state_after = if failed { "failed" } else { "pending" };
    store::finish_attempt(&mut tx, tenant, delivery_id, state_after, status, now).await?;
    tx.commit().await?;
    let error = match (answer.status, answer.error_class) {
        (Some(code), _) => format!("the receiver answered {code}"),
        (None, Some(class)) => format!("{class}: {}", answer.body),
        (None, None) => "no answer".to_owned(),
    };
    Ok(match (disabled, last_attempt, answer.retry_after) {
        (true, _, _) => Outcome::Done,
        (false, true, _) => Outcome::Fail(error),
        (false, false, Some(after)) => Outcome::retry_after(after, error),
        (false, false, None) => Outcome::retry(error),
    })
}

/// Fails a pending delivery whose endpoint is gone or disabled, without an attempt.
async fn give_up(
    state: &AppState,
    tenant: &str,
    delivery_id: &str,
    now: i64,
) -> anyhow::Result<()> {
    let mut tx = state.db.write(tenant).await?;
    store::finish_attempt(&mut tx, tenant, delivery_id, "failed", None, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The group commit that records successful attempts (see [`store::record_successes`]).
fn success_recorder(db: Db) -> GroupCommit<store::Success> {
    GroupCommit::start(256, move |successes: Vec<store::Success>| {
        let db = db.clone();
        async move {
            let committed = match store::record_successes(&db, &successes).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::error!(error = %err, attempts = successes.len(), "recording successful attempts failed");
                    false
                }
            };
            vec![committed; successes.len()]
        }
    })
}

async fn send(
    state: &AppState,
    url: &str,
    message_id: &str,
    timestamp: i64,
    signature: &str,
    body: String,
) -> Answer {
    let started = Instant::now();
    let failed = |class: &'static str, detail: String, started: Instant| Answer {
        status: None,
        error_class: Some(class),
        body: truncate(detail),
        retry_after: None,
        latency: started.elapsed(),
    };
    let request = match state.outbound.request(reqwest::Method::POST, url) {
        Ok(request) => request
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body),
        Err(err) => return failed(err.class.as_str(), err.detail, started),
    };
    let mut response = match state.outbound.send(request).await {
        Ok(response) => response,
        Err(err) => return failed(err.class.as_str(), err.detail, started),
    };
    let status = response.status().as_u16();
    let retry_after = matches!(status, 429 | 503)
        .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).clamp(RETRY_AFTER_BOUNDS.0, RETRY_AFTER_BOUNDS.1));
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_KEPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(RESPONSE_KEPT_BYTES);
    Answer {
        status: Some(status),
        error_class: None,
        body: String::from_utf8_lossy(&kept).into_owned(),
        retry_after,
        latency: started.elapsed(),
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > RESPONSE_KEPT_BYTES {
        let mut end = RESPONSE_KEPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
