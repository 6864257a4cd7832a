//! Usage meters out: a hosted operator bills each tenant for the revenue its partners brought.
//!
//! Daily (and on demand, `POST /v1/billing/report-usage`), each tenant with a billing customer
//! has the attributed revenue since its high-water mark summed and sent to the operator's Stripe
//! account as one meter event (`POST /v1/billing/meter_events`): `event_name`,
//! `payload[stripe_customer_id]`, `payload[value]` (minor units of the meter's one currency, as a
//! string), an `identifier` fixed by tenant and window, and the window's last second as
//! `timestamp`. The mark advances only once Stripe accepted the event; the window is kept as
//! pending before the call, and reports at once wait for each other on the tenant's mark, so a
//! retry (after a failure, a crash, or from another node) sends the same event, which Stripe
//! deduplicates by its identifier for about a day. A window with nothing to report advances the
//! mark without a call.

use job_queue::{Job, KindOptions, NewJob, Outcome, Periodic, Worker};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::clock::rfc3339;

use super::client::StripeError;

pub const REPORT: &str = "billing.report_usage";
/// Daily, five minutes past midnight UTC.
const REPORT_EVERY: &str = "0 5 0 * * *";
const DAY_MS: i64 = 24 * 3600 * 1000;
/// A report on demand counts up to this long ago: attributions stamped just before now may not
/// have committed yet, and would be passed over by the mark.
pub const GRACE_MS: i64 = 5 * 60 * 1000;

/// What one tenant's report did.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub tenant: String,
    pub billing_customer: String,
    /// `reported`, `nothing_to_report` or `failed` (kept pending: the next run sends it again).
    pub status: String,
    /// The window's end: conversions attributed up to it are counted.
    pub until: String,
    /// Minor units of the meter's currency.
    pub value: i64,
    /// The meter event's identifier, the same on every retry of this window.
    pub identifier: Option<String>,
    pub error: Option<String>,
}

/// Reports every billed tenant's usage up to `until` (Unix ms). `Err` only when the operator
/// has no Stripe key or the database fails; a tenant whose call failed is in the list.
pub async fn report_all(
    state: &AppState,
    until: i64,
) -> anyhow::Result<Vec<(UsageReport, Option<StripeError>)>> {
    let key = state
        .config
        .platform_stripe_key
        .clone()
        .ok_or_else(|| anyhow::anyhow!("SWITCHYARD_PLATFORM_STRIPE_KEY is not set"))?;
    let mut reports = Vec::new();
    for tenant in crate::tenants::billed(state.db.pool()).await? {
        reports.push(report(state, &key, &tenant, until).await?);
    }
    Ok(reports)
}

async fn report(
    state: &AppState,
    key: &str,
    tenant: &crate::tenants::Billed,
    until: i64,
) -> anyhow::Result<(UsageReport, Option<StripeError>)> {
    let mut tx = state.db.write(&tenant.id).await?;
    // The mark's row is locked before it is read (a no-op UPDATE: PostgreSQL's row lock, inside
    // SQLite's write transaction), so two reports at once, the daily job on two nodes or a
    // manual one, see each other's pending window and send the same event, never two windows.
    let now = state.clock.now_ms();
    sqlx::query(
        "INSERT INTO usage_marks (tenant_id, reported_until, updated_at) VALUES ($1, 0, $2)
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(&tenant.id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE usage_marks SET updated_at = updated_at WHERE tenant_id = $1")
        .bind(&tenant.id)
        .execute(&mut *tx)
        .await?;
    let mark: Option<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT reported_until, pending_until, pending_value FROM usage_marks
         WHERE tenant_id = $1",
    )
    .bind(&tenant.id)
    .fetch_optional(&mut *tx)
    .await?;
    let (window_until, value) = match mark {
        Some((_, Some(pending_until), Some(pending_value))) => (pending_until, pending_value),
        _ => {
            let since = mark.map_or(0, |(reported, _, _)| reported);
            let value = if until > since {
                crate::attribution::revenue(
                    &mut tx,
                    &tenant.id,
                    &state.config.stripe_meter_currency,
                    since,
                    until,
                )
                .await?
            } else {
                0
            };
            let (pending_until, pending_value) = if value > 0 {
                (Some(until), Some(value))
            } else {
                (None, None)
            };
            sqlx::query(
                "INSERT INTO usage_marks (tenant_id, reported_until, pending_until, pending_value,
                     updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id) DO UPDATE SET reported_until = excluded.reported_until,
                     pending_until = excluded.pending_until,
                     pending_value = excluded.pending_value, updated_at = excluded.updated_at",
            )
            .bind(&tenant.id)
            .bind(if value > 0 { since } else { until.max(since) })
            .bind(pending_until)
            .bind(pending_value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            (until.max(since), value)
        }
    };
    tx.commit().await?;
    let mut report = UsageReport {
        tenant: tenant.slug.clone(),
        billing_customer: tenant.billing_customer.clone(),
        status: "nothing_to_report".to_owned(),
        until: rfc3339(window_until),
        value,
        identifier: None,
        error: None,
    };
    if value == 0 {
        return Ok((report, None));
    }
    let identifier = format!("switchyard_{}_{window_until}", tenant.id);
    report.identifier = Some(identifier.clone());
    let params = json!({
        "event_name": state.config.stripe_meter_event,
        "payload": {"stripe_customer_id": tenant.billing_customer, "value": value.to_string()},
        "identifier": identifier,
        // The last second inside the window, so a window ending at midnight is the day before's.
        "timestamp": (window_until - 1).div_euclid(1000),
    });
    let sent = state
        .stripe
        .post(
            key,
            "/v1/billing/meter_events",
            &params,
            &format!("meter_{identifier}"),
            None,
        )
        .await;
    if let Err(err) = sent {
        report.status = "failed".to_owned();
        report.error = Some(err.to_string());
        return Ok((report, Some(err)));
    }
    let mut tx = state.db.write(&tenant.id).await?;
    sqlx::query(
        "UPDATE usage_marks SET reported_until = $1, pending_until = NULL, pending_value = NULL,
             updated_at = $2
         WHERE tenant_id = $3 AND pending_until = $1",
    )
    .bind(window_until)
    .bind(state.clock.now_ms())
    .bind(&tenant.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    report.status = "reported".to_owned();
    Ok((report, None))
}

/// Starts a tenant's meter at `now` when it gets a billing customer: revenue from before it
/// was billed (or while its billing was off) is not reported. Refused while a window is pending
/// for the customer it had: that window goes first.
pub async fn start_mark(tx: &mut crate::db::Tx, tenant_id: &str, now: i64) -> anyhow::Result<()> {
    let pending: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT pending_until FROM usage_marks WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await?;
    anyhow::ensure!(
        !matches!(pending, Some((Some(_),))),
        "a usage report of this tenant is pending (it failed); report it first \
         (POST /v1/billing/report-usage)"
    );
    sqlx::query(
        "INSERT INTO usage_marks (tenant_id, reported_until, updated_at) VALUES ($1, $2, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET reported_until = excluded.reported_until,
             updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Registers the daily report on `worker`.
pub fn register(worker: Worker, state: AppState) -> Worker {
    worker.register(
        REPORT,
        KindOptions {
            concurrency: 1,
            lease: std::time::Duration::from_secs(state.config.job_lease_secs),
            ..KindOptions::default()
        },
        move |_job: Job| {
            let state = state.clone();
            async move {
                // Whole days: up to the last midnight (UTC).
                let until = state.clock.now_ms().div_euclid(DAY_MS) * DAY_MS;
                let reports = match report_all(&state, until).await {
                    Ok(reports) => reports,
                    Err(err) => return Outcome::retry(format!("reporting usage failed: {err:#}")),
                };
                let mut retry = None;
                for (report, error) in &reports {
                    if let Some(error) = error {
                        tracing::warn!(tenant = %report.tenant, error = %error, "a usage report failed");
                        match error.retry() {
                            Some(after) => retry = Some(retry.flatten().or(after)),
                            None => {
                                return Outcome::Fail(format!(
                                    "Stripe refused the usage of {}: {error}",
                                    report.tenant
                                ))
                            }
                        }
                    }
                }
                match retry {
                    Some(Some(after)) => Outcome::retry_after(after, "a usage report failed"),
                    Some(None) => Outcome::retry("a usage report failed"),
                    None => Outcome::Done,
                }
            }
        },
    )
}

/// Adds the daily report to the periodic schedule, when the operator bills by usage.
pub fn schedule(periodic: Periodic, state: &AppState) -> Result<Periodic, job_queue::Error> {
    if state.config.platform_stripe_key.is_none() {
        return Ok(periodic);
    }
    periodic.every(REPORT_EVERY, NewJob::new(REPORT, json!({})))
}
