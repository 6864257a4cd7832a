//! `Idempotency-Key` on POST requests (DESIGN.md section 8). The first request with a key runs
//! and its answer is kept for a day; a retry with the same key and the same request gets that
//! answer again (`Idempotent-Replayed: true`) and changes nothing. The same key with a different
//! request is 422 `idempotency_key_reused`; a retry while the first is still running is 409
//! `idempotency_key_in_use`. A 5xx answer is not kept, so the retry runs.
//!
//! A kept answer belongs to the caller that made it (DESIGN.md section 9): it is found by
//! tenant, calling API key and `Idempotency-Key`, so it is replayed only to a caller that the
//! [`super::auth::authenticate`] middleware has just authenticated as that same key (still valid,
//! partner still active). Another key sending the same key and request runs a request of its own, with its own
//! authorization. Answers are sealed with the secrets key before they are stored, because some
//! carry a secret that is shown once (a new API key, a webhook signing secret).

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use job_queue::{Job, KindOptions, NewJob, Outcome, Periodic, Worker};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::keys::Principal;

use super::error::{problem, Error};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key's answer is replayed.
const KEPT_MS: i64 = 24 * 60 * 60 * 1000;
/// A first request that has not answered in this long is taken to have died with its process.
const ABANDONED_MS: i64 = 60 * 1000;
/// The periodic job deleting expired keys, and its schedule (hourly).
pub const PURGE: &str = "idempotency.purge";
const PURGE_EVERY: &str = "0 17 * * * *";

/// Registers the purge of expired keys on `worker`.
pub fn register(worker: Worker, state: AppState) -> Worker {
    worker.register(
        PURGE,
        KindOptions {
            concurrency: 1,
            lease: std::time::Duration::from_secs(state.config.job_lease_secs),
            ..KindOptions::default()
        },
        move |_job: Job| {
            let state = state.clone();
            async move {
                match purge_expired(&state).await {
                    Ok(_) => Outcome::Done,
                    Err(err) => Outcome::retry(format!("purging idempotency keys failed: {err:#}")),
                }
            }
        },
    )
}

/// Deletes the keys past their day, in every tenant (the hourly job). Returns how many.
pub async fn purge_expired(state: &AppState) -> anyhow::Result<u64> {
    let cutoff = state.clock.now_ms() - KEPT_MS;
    let mut purged = 0;
    for tenant in crate::tenants::all_ids(state.db.pool()).await? {
        let mut tx = state.db.write(&tenant).await?;
        purged +=
            sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND created_at < $2")
                .bind(&tenant)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
    }
    Ok(purged)
}

/// Adds the hourly purge to the periodic schedule.
pub fn schedule(periodic: Periodic) -> Result<Periodic, job_queue::Error> {
    periodic.every(PURGE_EVERY, NewJob::new(PURGE, serde_json::json!({})))
}

/// Middleware: replays, refuses or runs (and remembers) a POST carrying `Idempotency-Key`.
pub async fn replay(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let Some(key) = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .map(str::to_owned)
    else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_idempotency_key",
            Some("Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned()),
            Vec::new(),
        );
    };
    let (mut parts, body) = request.into_parts();
    // Kept answers belong to a caller, so a request without a valid key is left to the handler
    // (and its answer).
    let Ok(principal) = Principal::from_request_parts(&mut parts, &state).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Ok(bytes) = to_bytes(body, state.config.max_body_bytes).await else {
        return Error::PayloadTooLarge.into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint = hex::encode(hasher.finalize());

    let caller = Caller {
        tenant: &principal.tenant_id,
        key_id: &principal.key_id,
        key: &key,
    };
    let now = state.clock.now_ms();
    let begun = match store::begin(&state, &caller, &fingerprint, now).await {
        Ok(begun) => begun,
        Err(err) => return Error::from(err).into_response(),
    };
    match begun {
        Begun::First => {}
        Begun::Answered(kept) => return kept.into_response(),
        Begun::Running => {
            return Error::Conflict {
                code: "idempotency_key_in_use",
                detail: "a request with this Idempotency-Key is still being processed".to_owned(),
            }
            .into_response()
        }
        Begun::Different => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                Some("this Idempotency-Key was used with a different request".to_owned()),
                Vec::new(),
            )
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let text = std::str::from_utf8(&body).ok();
    let outcome = match text.filter(|_| !parts.status.is_server_error()) {
        Some(text) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let kept = Kept {
                status: parts.status.as_u16(),
                content_type: content_type.map(str::to_owned),
                body: text.to_owned(),
            };
            store::finish(&state, &caller, &kept).await
        }
        None => store::forget(&state, &caller).await,
    };
    if let Err(err) = outcome {
        tracing::warn!(error = %err, "the answer to an Idempotency-Key request was not kept");
    }
    Response::from_parts(parts, Body::from(body))
}

/// Whose `Idempotency-Key` this is: the tenant, the calling API key and the header's value.
struct Caller<'a> {
    tenant: &'a str,
    key_id: &'a str,
    key: &'a str,
}

enum Begun {
    /// No live request had this key: run this one.
    First,
    Answered(Kept),
    Running,
    Different,
}

/// An answer kept for replay.
struct Kept {
    status: u16,
    content_type: Option<String>,
    body: String,
}

impl IntoResponse for Kept {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        if let Some(value) = self
            .content_type
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

mod store {
    use super::{Begun, Caller, Kept, ABANDONED_MS, KEPT_MS};
    use crate::app::AppState;

    type Row = (String, Option<i64>, Option<String>, Option<String>, i64);

    /// Claims the caller's key for this request unless a live request holds it. The INSERT
    /// decides between two first requests racing (the second waits for the first's commit, then
    /// finds its row); an expired or abandoned row is taken over only if it is still the one read.
    pub(super) async fn begin(
        state: &AppState,
        caller: &Caller<'_>,
        fingerprint: &str,
        now: i64,
    ) -> sqlx::Result<Begun> {
        let mut tx = state.db.write(caller.tenant).await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, caller, key, fingerprint, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, caller, key) DO NOTHING",
        )
        .bind(caller.tenant)
        .bind(caller.key_id)
        .bind(caller.key)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(Begun::First);
        }
        let (kept_fingerprint, status, content_type, sealed, created_at): Row = sqlx::query_as(
            "SELECT fingerprint, status_code, content_type, response_sealed, created_at
             FROM idempotency_keys WHERE tenant_id = $1 AND caller = $2 AND key = $3",
        )
        .bind(caller.tenant)
        .bind(caller.key_id)
        .bind(caller.key)
        .fetch_one(&mut *tx)
        .await?;
        let live = created_at > now - KEPT_MS;
        // An answer that no longer opens (the secrets key changed) cannot be replayed: the
        // request runs again rather than failing for the rest of the day.
        let body = match sealed.as_deref().map(|s| state.secrets.open(s)) {
            Some(Ok(body)) => Some(body),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "a kept idempotent answer does not open; running the request again");
                None
            }
            None => Some(String::new()),
        };
        let begun = match (status, body) {
            _ if !live => Begun::First,
            _ if kept_fingerprint != fingerprint => Begun::Different,
            (Some(_), None) => Begun::First,
            (Some(status), Some(body)) => Begun::Answered(Kept {
                status: u16::try_from(status).unwrap_or(200),
                content_type,
                body,
            }),
            (None, _) if created_at > now - ABANDONED_MS => Begun::Running,
            (None, _) => Begun::First,
        };
        if matches!(begun, Begun::First) {
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = $1, created_at = $2,
                     status_code = NULL, content_type = NULL, response_sealed = NULL
                 WHERE tenant_id = $3 AND caller = $4 AND key = $5 AND created_at = $6",
            )
            .bind(fingerprint)
            .bind(now)
            .bind(caller.tenant)
            .bind(caller.key_id)
            .bind(caller.key)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                tx.commit().await?;
                return Ok(Begun::Running);
            }
        }
        tx.commit().await?;
        Ok(begun)
    }

    /// Keeps the answer, sealed.
    pub(super) async fn finish(
        state: &AppState,
        caller: &Caller<'_>,
        kept: &Kept,
    ) -> sqlx::Result<()> {
        let mut tx = state.db.write(caller.tenant).await?;
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, content_type = $2, response_sealed = $3
             WHERE tenant_id = $4 AND caller = $5 AND key = $6",
        )
        .bind(i64::from(kept.status))
        .bind(&kept.content_type)
        .bind(state.secrets.seal(&kept.body))
        .bind(caller.tenant)
        .bind(caller.key_id)
        .bind(caller.key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub(super) async fn forget(state: &AppState, caller: &Caller<'_>) -> sqlx::Result<()> {
        let mut tx = state.db.write(caller.tenant).await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND caller = $2 AND key = $3",
        )
        .bind(caller.tenant)
        .bind(caller.key_id)
        .bind(caller.key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}
