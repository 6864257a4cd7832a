//! The partner Network: an external marketplace where creators find programs, federated with
//! many Switchyard instances. `docs/network-protocol.md` is the protocol; this slice is the
//! instance's side of it.
//!
//! - **Connect.** `POST /v1/network/connect` mints a scoped federation key (partners:read and
//!   partners:write: the Network creates partners and their links with it), signs up with the
//!   Network (`POST /vendors/signup`) and keeps the half-finished state; the admin then gives
//!   the one-time token the Network mailed, exchanged for the vendor token
//!   (`POST /vendors/verify-and-issue-token`), which is sealed and never leaves the server.
//! - **The outbox.** In the transaction that makes the change, a partner created (when
//!   `auto_enroll` is on), revoked or reinstated (always, so a revoked partner stops being
//!   matched) enqueues a `network.upsert` job for that state, and so does an edit of a partner
//!   the Network has. The job sends the partner as it is when the job runs, with its
//!   `updated_at` as the revision (the Network keeps the highest), and a job whose change a
//!   newer mirrored one superseded (`network_revision`) sends nothing: the newest state wins
//!   and nothing goes out of order (ADR 13). The answer's creator id is stamped on the partner. Retries are
//!   stored with jitter, out to about 24 hours; then the job is dead, visible in `/v1/queue`
//!   and in `GET /v1/network`.
//! - **Backfill**, in batches, safe to run twice; a **heartbeat** every five minutes (once per
//!   window across nodes); a daily **payouts report** of what Network-sourced partners were
//!   paid since a high-water mark, which advances only when the Network accepted it.
//! - **Proxied pages** (offerings, requests) for admins: thin calls with the vendor token.

pub mod client;
pub mod routes;
pub mod store;

use std::time::Duration;

use job_queue::{Handoff, Job, KindOptions, NewJob, Outcome, Periodic, RetrySchedule, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::db::Tx;
use crate::http::error::Error;
use crate::partners::StoredPartner;

use self::client::NetworkError;
pub use self::store::StoredConnection;

pub const UPSERT: &str = "network.upsert";
pub const HEARTBEAT: &str = "network.heartbeat";
pub const REPORT_PAYOUTS: &str = "network.report_payouts";
/// Every five minutes.
const HEARTBEAT_EVERY: &str = "0 */5 * * * *";
/// Daily, at a quarter past midnight UTC.
const REPORT_EVERY: &str = "0 15 0 * * *";
/// The upsert's retries: about 24 hours in all (23.9 h before jitter), then the job is dead.
const UPSERT_RETRY_SECS: [u64; 11] = [
    10, 60, 300, 900, 1800, 3600, 7200, 10_800, 14_400, 18_000, 28_800,
];
/// Partners per backfill request.
pub const BACKFILL_BATCH: usize = 100;

/// The Network's answer as the API passes it on: unreachable is 503 `network_unreachable`; an
/// error status is passed on (a 5xx as 502) as `network_error` with the Network's message.
pub fn problem(err: NetworkError) -> Error {
    match err {
        NetworkError::Unreachable(detail) => Error::Unreachable {
            code: "network_unreachable",
            detail,
        },
        NetworkError::Status {
            status, message, ..
        } => Error::Passed {
            status: if status >= 500 { 502 } else { status },
            code: "network_error",
            detail: message,
        },
    }
}

/// The tenant's connection with the vendor token open, when it is connected.
pub struct Connected {
    pub connection: StoredConnection,
    pub token: String,
}

/// The tenant's connection, if connected, with its token.
pub async fn connected(
    state: &AppState,
    tx: &mut Tx,
    tenant_id: &str,
) -> anyhow::Result<Option<Connected>> {
    let Some(connection) = store::find(tx, tenant_id).await? else {
        return Ok(None);
    };
    let Some(sealed) = connection.vendor_token_sealed.as_deref() else {
        return Ok(None);
    };
    let token = state.secrets.open(sealed)?;
    Ok(Some(Connected { connection, token }))
}

/// Calls the Network of `connected` with its vendor token.
pub async fn call(
    state: &AppState,
    connected: &Connected,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, NetworkError> {
    let base = &connected.connection.network_url;
    client::call(
        &state.outbound,
        method,
        base,
        path,
        Some(&connected.token),
        body,
    )
    .await
}

/// Enqueues the upsert of `partner`'s current state in the caller's transaction, when the
/// tenant is connected and, for a new partner (`created`), enrolls automatically.
pub async fn enqueue_upsert(
    tx: &mut Tx,
    handoff: &mut Handoff,
    partner: &StoredPartner,
    created: bool,
) -> anyhow::Result<()> {
    let Some(connection) = store::find(tx, &partner.tenant_id).await? else {
        return Ok(());
    };
    if connection.status != "connected" || (created && connection.auto_enroll == 0) {
        return Ok(());
    }
    let revision = next_revision(partner);
    let job = upsert_job(&partner.tenant_id, &partner.id, revision);
    handoff.enqueue_in(tx, job).await?;
    crate::partners::store::set_network_revision(tx, &partner.tenant_id, &partner.id, revision)
        .await?;
    Ok(())
}

/// The revision of the partner's next mirrored state: its `updated_at`, and always above the
/// last one (two changes in one millisecond, or a node whose clock is behind, still order).
fn next_revision(partner: &StoredPartner) -> i64 {
    partner
        .updated_at
        .max(partner.network_revision.map_or(0, |r| r + 1))
}

/// Whether `key_id` is the tenant's federation key, of a connected Network.
pub async fn is_federation_key(tx: &mut Tx, tenant_id: &str, key_id: &str) -> sqlx::Result<bool> {
    Ok(store::find(tx, tenant_id)
        .await?
        .is_some_and(|c| c.status == "connected" && c.federation_key_id == key_id))
}

fn upsert_job(tenant_id: &str, partner_id: &str, revision: i64) -> NewJob {
    NewJob::new(
        UPSERT,
        json!({"tenant_id": tenant_id, "partner_id": partner_id, "revision": revision}),
    )
    .max_attempts(UPSERT_RETRY_SECS.len() as u32 + 1)
    .dedupe_key(format!("network:{tenant_id}:{partner_id}:{revision}"))
}

/// A partner as the Network receives it.
pub fn wire(partner: &StoredPartner) -> Value {
    json!({
        "partner_id": partner.id,
        "email": partner.email,
        "name": partner.name,
        "status": partner.status,
        "source": partner.source,
        "network_creator_id": partner.network_creator_id,
        "revision": partner.network_revision.unwrap_or(partner.updated_at),
        "updated_at": rfc3339(partner.updated_at),
    })
}

#[derive(Deserialize)]
struct UpsertPayload {
    tenant_id: String,
    partner_id: String,
    revision: i64,
}

async fn upsert(state: &AppState, payload: &UpsertPayload) -> anyhow::Result<Outcome> {
    let tenant = &payload.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let connected = connected(state, &mut tx, tenant).await?;
    let partner = crate::partners::store::find(&mut tx, tenant, &payload.partner_id).await?;
    tx.commit().await?;
    let (Some(connected), Some(partner)) = (connected, partner) else {
        // Disconnected since, or no such partner: nothing to send.
        return Ok(Outcome::Done);
    };
    if partner.network_revision.unwrap_or_default() > payload.revision {
        // A newer change has its own job, which sends the newer state.
        return Ok(Outcome::Done);
    }
    let body = json!({"partner": wire(&partner)});
    let sent = call(
        state,
        &connected,
        reqwest::Method::POST,
        "/partners/upsert",
        Some(&body),
    )
    .await;
    let now = state.clock.now_ms();
    let mut tx = state.db.write(tenant).await?;
    let outcome = match sent {
        Ok(answer) => {
            if let Some(creator) = answer["creator_id"].as_str() {
                crate::partners::store::set_network_creator_id(
                    &mut tx,
                    tenant,
                    &partner.id,
                    creator,
                )
                .await?;
            }
            store::set_error(&mut tx, tenant, None, now).await?;
            Outcome::Done
        }
        Err(err) => {
            store::set_error(
                &mut tx,
                tenant,
                Some(&format!("upsert of {}: {err}", partner.id)),
                now,
            )
            .await?;
            if err.is_transient() {
                Outcome::retry(err.to_string())
            } else {
                Outcome::Fail(err.to_string())
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// What a backfill did.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Backfilled {
    /// Partners the Network now knows because of this backfill.
    pub sent: u64,
    /// Partners the Network knew already (by e-mail, or from an earlier backfill).
    pub already_known: u64,
    /// Partners the Network refused, or that could not be sent.
    pub failed: u64,
}

/// Sends every partner of the tenant to the Network, in batches; stamps the creator ids.
pub async fn backfill(state: &AppState, connected: &Connected) -> anyhow::Result<Backfilled> {
    let tenant = &connected.connection.tenant_id;
    let mut counts = Backfilled::default();
    let mut after = String::new();
    loop {
        let mut tx = state.db.read(tenant).await?;
        let batch =
            crate::partners::store::page_by_id(&mut tx, tenant, &after, BACKFILL_BATCH as i64)
                .await?;
        tx.commit().await?;
        let Some(last) = batch.last() else {
            return Ok(counts);
        };
        after = last.id.clone();
        // Each partner's state goes out as its newest revision: queued upserts of older ones
        // are superseded.
        let mut tx = state.db.write(tenant).await?;
        let mut batch = batch;
        for partner in &mut batch {
            let revision = next_revision(partner);
            crate::partners::store::set_network_revision(&mut tx, tenant, &partner.id, revision)
                .await?;
            partner.network_revision = Some(revision);
        }
        tx.commit().await?;
        let body = json!({"partners": batch.iter().map(wire).collect::<Vec<_>>()});
        let answer = call(
            state,
            connected,
            reqwest::Method::POST,
            "/vendors/backfill-partners",
            Some(&body),
        )
        .await;
        let Ok(answer) = answer else {
            counts.failed += batch.len() as u64;
            continue;
        };
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        let mut tx = state.db.write(tenant).await?;
        for partner in &batch {
            let result = results
                .iter()
                .find(|r| r["partner_id"].as_str() == Some(partner.id.as_str()));
            match result.and_then(|r| r["status"].as_str()) {
                Some("created") => counts.sent += 1,
                Some("already_existed") => counts.already_known += 1,
                _ => {
                    counts.failed += 1;
                    continue;
                }
            }
            if let Some(creator) = result.and_then(|r| r["creator_id"].as_str()) {
                crate::partners::store::set_network_creator_id(
                    &mut tx,
                    tenant,
                    &partner.id,
                    creator,
                )
                .await?;
            }
        }
        tx.commit().await?;
    }
}

/// Reports to the Network of `tenant_id` what its Network-sourced partners were paid since the
/// mark and up to `until`: one report per currency. The mark advances only when every report was
/// accepted (the Network deduplicates a report by its currency and window); a window with
/// nothing paid advances it without a call. Returns the reports sent.
pub async fn report_payouts(
    state: &AppState,
    tenant_id: &str,
    until: i64,
) -> anyhow::Result<Vec<Value>> {
    let mut tx = state.db.read(tenant_id).await?;
    let Some(connected) = connected(state, &mut tx, tenant_id).await? else {
        return Ok(Vec::new());
    };
    let since = connected.connection.payouts_reported_until;
    // A window that was being reported is reported again unchanged, so the Network can tell the
    // retry from a new window.
    let until = match connected.connection.payouts_pending_until {
        Some(pending) => pending,
        None => until,
    };
    let sums = if until > since {
        crate::payouts::store::paid_to_network(&mut tx, tenant_id, since, until).await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    let sums: Vec<(String, i64)> = sums.into_iter().filter(|(_, amount)| *amount > 0).collect();
    if !sums.is_empty() && connected.connection.payouts_pending_until.is_none() {
        let mut tx = state.db.write(tenant_id).await?;
        store::set_pending_until(&mut tx, tenant_id, until).await?;
        tx.commit().await?;
    }
    let mut sent = Vec::new();
    for (currency, amount) in sums {
        let report = json!({"amount": amount, "currency": currency,
                            "since": rfc3339(since), "until": rfc3339(until)});
        call(
            state,
            &connected,
            reqwest::Method::POST,
            "/vendors/me/report-payouts",
            Some(&report),
        )
        .await?;
        sent.push(report);
    }
    let mut tx = state.db.write(tenant_id).await?;
    store::set_reported_until(&mut tx, tenant_id, until.max(since)).await?;
    tx.commit().await?;
    Ok(sent)
}

/// Tells the Network of `tenant_id` this instance is alive; a failure is kept as the last error.
pub async fn heartbeat(state: &AppState, tenant_id: &str) -> anyhow::Result<()> {
    let mut tx = state.db.read(tenant_id).await?;
    let Some(connected) = connected(state, &mut tx, tenant_id).await? else {
        return Ok(());
    };
    tx.commit().await?;
    let body = json!({"instance_url": state.config.public_url(),
                      "version": env!("CARGO_PKG_VERSION")});
    let sent = call(
        state,
        &connected,
        reqwest::Method::POST,
        "/vendors/me/heartbeat",
        Some(&body),
    )
    .await;
    let mut tx = state.db.write(tenant_id).await?;
    let error = sent.err().map(|e| format!("heartbeat: {e}"));
    store::set_error(&mut tx, tenant_id, error.as_deref(), state.clock.now_ms()).await?;
    tx.commit().await?;
    Ok(())
}

/// Registers the upsert, heartbeat and payouts-report jobs on `worker`.
pub fn register(worker: Worker, state: AppState) -> Worker {
    let lease = Duration::from_secs(state.config.job_lease_secs);
    let (beats, reports) = (state.clone(), state.clone());
    worker
        .register(
            UPSERT,
            KindOptions {
                concurrency: 4,
                schedule: RetrySchedule::Fixed {
                    delays: UPSERT_RETRY_SECS
                        .iter()
                        .map(|s| Duration::from_secs(*s))
                        .collect(),
                    jitter_percent: 20,
                },
                lease,
            },
            move |job: Job| {
                let state = state.clone();
                async move {
                    let Ok(payload) = serde_json::from_value::<UpsertPayload>(job.payload) else {
                        return Outcome::Fail("malformed Network upsert payload".to_owned());
                    };
                    match upsert(&state, &payload).await {
                        Ok(outcome) => outcome,
                        Err(err) => Outcome::retry(format!("the Network upsert failed: {err:#}")),
                    }
                }
            },
        )
        .register(
            HEARTBEAT,
            KindOptions {
                concurrency: 1,
                lease,
                ..KindOptions::default()
            },
            move |_job: Job| {
                let state = beats.clone();
                async move {
                    // A missed beat is not retried: the next window beats again. Every tenant is
                    // visited (a connection is read in its tenant's scope, as RLS wants).
                    let tenants = crate::tenants::all_ids(state.db.pool()).await;
                    for tenant in tenants.unwrap_or_default() {
                        if let Err(err) = heartbeat(&state, &tenant).await {
                            tracing::warn!(%tenant, error = %err, "the Network heartbeat failed");
                        }
                    }
                    Outcome::Done
                }
            },
        )
        .register(
            REPORT_PAYOUTS,
            KindOptions {
                concurrency: 1,
                lease,
                ..KindOptions::default()
            },
            move |_job: Job| {
                let state = reports.clone();
                async move {
                    let until = state.clock.now_ms() - crate::stripe::meters::GRACE_MS;
                    let tenants = match crate::tenants::all_ids(state.db.pool()).await {
                        Ok(tenants) => tenants,
                        Err(err) => return Outcome::retry(format!("listing connections: {err}")),
                    };
                    let mut failed = None;
                    for tenant in tenants {
                        if let Err(err) = report_payouts(&state, &tenant, until).await {
                            tracing::warn!(%tenant, error = %err, "the Network payouts report failed");
                            failed = Some(err.to_string());
                        }
                    }
                    match failed {
                        Some(err) => Outcome::retry(format!("a payouts report failed: {err}")),
                        None => Outcome::Done,
                    }
                }
            },
        )
}

/// Adds the heartbeat and the daily payouts report to the periodic schedule.
pub fn schedule(periodic: Periodic) -> Result<Periodic, job_queue::Error> {
    periodic
        .every(HEARTBEAT_EVERY, NewJob::new(HEARTBEAT, json!({})))?
        .every(REPORT_EVERY, NewJob::new(REPORT_PAYOUTS, json!({})))
}

/// How many upserts of the tenant are waiting (due or retrying) and dead.
pub async fn outbox_depth(state: &AppState, tenant_id: &str) -> anyhow::Result<(i64, i64)> {
    Ok(state
        .queue
        .count_by_dedupe_prefix(&format!("network:{tenant_id}:"))
        .await?)
}
