//! Deliveries, for admins watching and mending: an endpoint's deliveries, one delivery with its
//! attempt timeline, and replays (one delivery, or every failed one since a time).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::http::error::{AuthProblems, Error, InvalidProblem, NotFoundProblem, Problem, Result};
use crate::http::extract::{Path, Query};
use crate::http::pagination::{List, Page};
use crate::keys::{Principal, Scope};

use super::delivery::schedule;
use super::routes::existing;
use super::store::{self, AttemptRow, DeliveryRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(replay_delivery))
        .routes(routes!(replay_failed))
}

/// The delivery of one message to one endpoint.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    /// The message id: the `webhook-id` the receiver saw.
    pub message_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    /// `pending` (being attempted or waiting for a retry), `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<DeliveryRow> for Delivery {
    fn from(d: DeliveryRow) -> Self {
        Delivery {
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            id: d.id,
            message_id: d.message_id,
            endpoint_id: d.endpoint_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
        }
    }
}

/// One attempt: the receiver's status code, or why there was none.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    pub id: String,
    pub status_code: Option<i64>,
    /// `timeout`, `connect`, `ssrf_blocked` (also for a host name that does not resolve), `invalid_url` or `other` when no HTTP answer came.
    pub error_class: Option<String>,
    pub latency_ms: i64,
    /// The first 4 KiB of the answer (or the error).
    pub response_body: String,
    pub created_at: String,
}

impl From<AttemptRow> for Attempt {
    fn from(a: AttemptRow) -> Self {
        Attempt {
            created_at: rfc3339(a.created_at),
            id: a.id,
            status_code: a.status_code,
            error_class: a.error_class,
            latency_ms: a.latency_ms,
            response_body: a.response_body,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryWithAttempts {
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Every attempt, oldest first.
    pub timeline: Vec<Attempt>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An endpoint's deliveries, newest first (`webhooks:read`).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`"), ListDeliveries),
    responses(
        (status = 200, body = List<Delivery>),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ListDeliveries>,
) -> Result<axum::Json<List<Delivery>>> {
    principal.require(Scope::WebhooksRead)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    existing(&mut tx, tenant, &id).await?;
    let rows = store::list_deliveries(&mut tx, tenant, &id, &page).await?;
    tx.commit().await?;
    let list = page.finish(rows, |d| (d.created_at, &d.id));
    Ok(axum::Json(List {
        data: list.data.into_iter().map(Delivery::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

/// A delivery and its attempt timeline (`webhooks:read`).
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Delivery id, `dlv_...`")),
    responses(
        (status = 200, body = DeliveryWithAttempts),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn get_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryWithAttempts>> {
    principal.require(Scope::WebhooksRead)?;
    Ok(axum::Json(
        with_attempts(&state, &principal.tenant_id, &id).await?,
    ))
}

/// A delivery and its attempts, as `GET /v1/deliveries/{id}` and test fires answer.
pub(crate) async fn with_attempts(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<DeliveryWithAttempts> {
    let mut tx = state.db.read(tenant).await?;
    let delivery = store::delivery_row(&mut tx, tenant, id)
        .await?
        .ok_or_else(|| Error::not_found("delivery"))?;
    let timeline = store::attempts(&mut tx, tenant, id).await?;
    tx.commit().await?;
    Ok(DeliveryWithAttempts {
        delivery: delivery.into(),
        timeline: timeline.into_iter().map(Attempt::from).collect(),
    })
}

/// Send a finished delivery again (`webhooks:write`), succeeded or failed. A delivery still
/// pending is already being attempted: 409.
#[utoipa::path(post, path = "/v1/deliveries/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "Delivery id, `dlv_...`")),
    responses(
        (status = 202, description = "The delivery is pending again"),
        AuthProblems,
        NotFoundProblem,
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
async fn replay_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    principal.require(Scope::WebhooksWrite)?;
    let tenant = &principal.tenant_id;
    let now = state.clock.now_ms();
    let mut tx = state.db.write(tenant).await?;
    if store::delivery_row(&mut tx, tenant, &id).await?.is_none() {
        return Err(Error::not_found("delivery"));
    }
    if !store::reopen_delivery(&mut tx, tenant, &id, now).await? {
        return Err(Error::Conflict {
            code: "delivery_pending",
            detail: "the delivery is still being attempted".to_owned(),
        });
    }
    schedule(
        &state,
        &mut tx,
        tenant,
        &id,
        &format!("deliver:{id}:replay:{now}"),
    )
    .await?;
    tx.commit().await?;
    state.queue.committed();
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplaySince {
    /// RFC 3339 time: deliveries created at or after it.
    pub since: String,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// How many failed deliveries are pending again.
    pub replayed: usize,
}

/// Send again every failed delivery of an endpoint created since a time (`webhooks:write`).
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`"), ReplaySince),
    responses(
        (status = 202, body = Replayed),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn replay_failed(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ReplaySince>,
) -> Result<(StatusCode, axum::Json<Replayed>)> {
    principal.require(Scope::WebhooksWrite)?;
    let since = humantime::parse_rfc3339_weak(&query.since)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .ok_or_else(|| {
            Error::invalid(
                "since",
                "must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z",
            )
        })?
        .as_millis() as i64;
    let tenant = &principal.tenant_id;
    let now = state.clock.now_ms();
    let mut tx = state.db.write(tenant).await?;
    existing(&mut tx, tenant, &id).await?;
    let failed = store::failed_since(&mut tx, tenant, &id, since).await?;
    for delivery in &failed {
        store::reopen_delivery(&mut tx, tenant, delivery, now).await?;
        schedule(
            &state,
            &mut tx,
            tenant,
            delivery,
            &format!("deliver:{delivery}:replay:{now}"),
        )
        .await?;
    }
    tx.commit().await?;
    state.queue.committed();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Replayed {
            replayed: failed.len(),
        }),
    ))
}
