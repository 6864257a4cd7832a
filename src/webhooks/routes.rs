//! `/v1/webhooks`: the REST-hooks subscription API that Zapier, ActivePieces and n8n use.
//!
//! Subscribing returns the id the platform later DELETEs and the signing secret, once.
//! Platforms re-subscribe freely: creating an endpoint with the URL and event types of a live
//! one returns that endpoint (200) instead of a duplicate. `GET /v1/webhooks?url=` finds one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::db::Tx;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Result,
};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};
use crate::http::validate::{check_url, nullable, validated};
use crate::ids;
use crate::keys::{Principal, Scope};

use super::catalog::{self, CATALOG};
use super::deliveries::{with_attempts, DeliveryWithAttempts};
use super::store::{self, StoredEndpoint};
use super::{delivery, event_type_names, is_event_type, join_types, signing, split_types};

/// How long the previous secret keeps signing after a rotation, so receivers can switch over.
const ROTATION_GRACE_MS: i64 = 24 * 3600 * 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(pause_endpoint))
        .routes(routes!(resume_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(test_fire))
        .routes(routes!(event_types))
}

/// A webhook endpoint and its delivery counters.
#[derive(Serialize, ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    /// Event types delivered to it; empty means every type.
    pub event_types: Vec<String>,
    /// `enabled`, `paused` or `disabled` (see `disabled_reason`).
    pub status: String,
    pub disabled_reason: Option<String>,
    /// Deliveries per second it accepts (bursts of the same size); null for no limit.
    pub rate_limit: Option<i64>,
    pub success_count: i64,
    pub failure_count: i64,
    pub consecutive_failures: i64,
    /// HTTP status of the last attempt (null when it got no answer).
    pub last_status: Option<i64>,
    pub last_attempt_at: Option<String>,
    pub last_success_at: Option<String>,
    /// Median latency of the last 100 attempts, in milliseconds (null before any attempt).
    pub latency_p50_ms: Option<i64>,
    /// 95th-percentile latency of the last 100 attempts, in milliseconds.
    pub latency_p95_ms: Option<i64>,
    pub created_at: String,
}

/// Attempts the latency percentiles are computed over.
const LATENCY_WINDOW: i64 = 100;

/// The nearest-rank percentile `q` (0 to 1) of `samples`.
fn percentile(samples: &mut [i64], q: f64) -> Option<i64> {
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).max(1);
    samples.get(rank - 1).copied()
}

/// Representations of `endpoints` with their recent latency percentiles (one query for all).
async fn represent(
    tx: &mut Tx,
    tenant: &str,
    endpoints: Vec<StoredEndpoint>,
) -> Result<Vec<Endpoint>> {
    let ids: Vec<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
    let mut latencies = store::recent_latencies(tx, tenant, &ids, LATENCY_WINDOW).await?;
    Ok(endpoints
        .into_iter()
        .map(|stored| {
            let mut samples = latencies.remove(&stored.id).unwrap_or_default();
            let mut endpoint = Endpoint::from(stored);
            endpoint.latency_p50_ms = percentile(&mut samples, 0.50);
            endpoint.latency_p95_ms = percentile(&mut samples, 0.95);
            endpoint
        })
        .collect())
}

async fn represent_one(tx: &mut Tx, tenant: &str, endpoint: StoredEndpoint) -> Result<Endpoint> {
    let mut one = represent(tx, tenant, vec![endpoint]).await?;
    Ok(one.remove(0))
}

impl From<StoredEndpoint> for Endpoint {
    fn from(e: StoredEndpoint) -> Self {
        Endpoint {
            event_types: split_types(&e.event_types),
            last_attempt_at: e.last_attempt_at.map(rfc3339),
            last_success_at: e.last_success_at.map(rfc3339),
            latency_p50_ms: None,
            latency_p95_ms: None,
            created_at: rfc3339(e.created_at),
            id: e.id,
            url: e.url,
            description: e.description,
            status: e.status,
            disabled_reason: e.disabled_reason,
            rate_limit: e.rate_limit,
            success_count: e.success_count,
            failure_count: e.failure_count,
            consecutive_failures: e.consecutive_failures,
            last_status: e.last_status,
        }
    }
}

/// An endpoint with its signing secret, shown when it is created or rotated.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: verify `webhook-signature` with it (Standard Webhooks). Not shown again.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateEndpoint {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Event types to deliver; omit or leave empty for every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Deliveries per second, 1 to 10000; excess deliveries wait, none is dropped.
    pub rate_limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// A new limit, or `null` to remove it; leave out to keep it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub rate_limit: Option<Option<i64>>,
}

fn check_rate_limit(rate_limit: Option<i64>, errors: &mut Vec<FieldError>) {
    if rate_limit.is_some_and(|r| !(1..=10_000).contains(&r)) {
        errors.push(FieldError::new(
            "rate_limit",
            "must be between 1 and 10000 deliveries per second",
        ));
    }
}

fn check_types(types: &[String], errors: &mut Vec<FieldError>) {
    for name in types.iter().filter(|t| !is_event_type(t)) {
        errors.push(FieldError::new(
            "event_types",
            format!(
                "unknown event type {name:?}; valid types: {}",
                event_type_names()
            ),
        ));
    }
}

fn check_description(description: &str, errors: &mut Vec<FieldError>) {
    if description.chars().count() > 500 {
        errors.push(FieldError::new(
            "description",
            "must be at most 500 characters",
        ));
    }
}

/// Subscribe an endpoint (`webhooks:write`). Returns 201 with the secret, or 200 with the live
/// endpoint that already has this URL and these event types.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateEndpoint,
    responses(
        (status = 201, body = EndpointWithSecret),
        (status = 200, body = Endpoint, description = "Already subscribed"),
        AuthProblems,
        InvalidProblem,
    ))]
async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateEndpoint>,
) -> Result<axum::response::Response> {
    principal.require(Scope::WebhooksWrite)?;
    let mut errors = Vec::new();
    check_url("url", &body.url, &mut errors);
    check_types(&body.event_types, &mut errors);
    check_description(&body.description, &mut errors);
    check_rate_limit(body.rate_limit, &mut errors);
    validated(errors)?;
    let tenant = &principal.tenant_id;
    let event_types = join_types(&body.event_types);
    let mut tx = state.db.write(tenant).await?;
    if let Some(existing) =
        store::find_subscription(&mut tx, tenant, &body.url, &event_types).await?
    {
        let existing = represent_one(&mut tx, tenant, existing).await?;
        tx.commit().await?;
        return Ok((StatusCode::OK, axum::Json(existing)).into_response());
    }
    let secret = signing::generate_secret();
    let endpoint = StoredEndpoint {
        id: ids::new("ep"),
        tenant_id: tenant.clone(),
        url: body.url,
        description: body.description,
        event_types,
        secret: state.secrets.seal(&secret),
        previous_secret: None,
        previous_secret_until: None,
        rate_limit: body.rate_limit,
        status: "enabled".to_owned(),
        disabled_reason: None,
        success_count: 0,
        failure_count: 0,
        consecutive_failures: 0,
        failing_since: None,
        last_status: None,
        last_attempt_at: None,
        last_success_at: None,
        created_at: state.clock.now_ms(),
    };
    store::insert_endpoint(&mut tx, &endpoint).await?;
    tx.commit().await?;
    let created = EndpointWithSecret {
        endpoint: endpoint.into(),
        secret,
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEndpoints {
    /// Only endpoints with exactly this URL (find a subscription).
    pub url: Option<String>,
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List endpoints, newest first (`webhooks:read`).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(ListEndpoints),
    responses(
        (status = 200, body = List<Endpoint>),
        AuthProblems,
        InvalidProblem,
    ))]
async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListEndpoints>,
) -> Result<axum::Json<List<Endpoint>>> {
    principal.require(Scope::WebhooksRead)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let rows = store::list_endpoints(&mut tx, tenant, query.url.as_deref(), &page).await?;
    let list = page.finish(rows, |e| (e.created_at, &e.id));
    let data = represent(&mut tx, tenant, list.data).await?;
    tx.commit().await?;
    Ok(axum::Json(List {
        data,
        next_cursor: list.next_cursor,
    }))
}

/// The tenant's live endpoint `id`, or 404.
pub(crate) async fn existing(tx: &mut Tx, tenant: &str, id: &str) -> Result<StoredEndpoint> {
    store::find_endpoint(tx, tenant, id)
        .await?
        .ok_or_else(|| Error::not_found("webhook endpoint"))
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> Result<(Tx, StoredEndpoint)> {
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let endpoint = existing(&mut tx, tenant, id).await?;
    Ok((tx, endpoint))
}

/// Get an endpoint and its counters (`webhooks:read`).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`")),
    responses(
        (status = 200, body = Endpoint),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn get_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Endpoint>> {
    principal.require(Scope::WebhooksRead)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let endpoint = existing(&mut tx, tenant, &id).await?;
    let endpoint = represent_one(&mut tx, tenant, endpoint).await?;
    tx.commit().await?;
    Ok(axum::Json(endpoint))
}

/// Change an endpoint's URL, event types or description (`webhooks:write`).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateEndpoint,
    params(("id" = String, Path, description = "Endpoint id, `ep_...`")),
    responses(
        (status = 200, body = Endpoint),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn update_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateEndpoint>,
) -> Result<axum::Json<Endpoint>> {
    principal.require(Scope::WebhooksWrite)?;
    let mut errors = Vec::new();
    if let Some(url) = &body.url {
        check_url("url", url, &mut errors);
    }
    if let Some(types) = &body.event_types {
        check_types(types, &mut errors);
    }
    if let Some(description) = &body.description {
        check_description(description, &mut errors);
    }
    if let Some(rate_limit) = body.rate_limit {
        check_rate_limit(rate_limit, &mut errors);
    }
    validated(errors)?;
    let (mut tx, mut endpoint) = load(&state, &principal, &id).await?;
    if let Some(url) = body.url {
        endpoint.url = url;
    }
    if let Some(types) = body.event_types {
        endpoint.event_types = join_types(&types);
    }
    if let Some(description) = body.description {
        endpoint.description = description;
    }
    if let Some(rate_limit) = body.rate_limit {
        endpoint.rate_limit = rate_limit;
    }
    store::update_endpoint(&mut tx, &endpoint, state.clock.now_ms()).await?;
    let endpoint = represent_one(&mut tx, &principal.tenant_id, endpoint).await?;
    tx.commit().await?;
    Ok(axum::Json(endpoint))
}

/// Unsubscribe: delete an endpoint (`webhooks:write`). Its delivery history is kept.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`")),
    responses(
        (status = 204, description = "Deleted"),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    principal.require(Scope::WebhooksWrite)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let deleted = store::delete_endpoint(&mut tx, tenant, &id, state.clock.now_ms()).await?;
    tx.commit().await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("webhook endpoint"))
    }
}

async fn set_status(
    state: &AppState,
    principal: &Principal,
    id: &str,
    status: &str,
) -> Result<axum::Json<Endpoint>> {
    principal.require(Scope::WebhooksWrite)?;
    let (mut tx, mut endpoint) = load(state, principal, id).await?;
    endpoint.status = status.to_owned();
    if status == "enabled" {
        endpoint.disabled_reason = None;
        endpoint.consecutive_failures = 0;
        endpoint.failing_since = None;
    }
    store::update_endpoint(&mut tx, &endpoint, state.clock.now_ms()).await?;
    let endpoint = represent_one(&mut tx, &principal.tenant_id, endpoint).await?;
    tx.commit().await?;
    Ok(axum::Json(endpoint))
}

/// Pause deliveries to an endpoint (`webhooks:write`). Pending deliveries wait, none is dropped.
#[utoipa::path(post, path = "/v1/webhooks/{id}/pause", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`")),
    responses(
        (status = 200, body = Endpoint),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn pause_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Endpoint>> {
    set_status(&state, &principal, &id, "paused").await
}

/// Resume a paused or disabled endpoint (`webhooks:write`); clears its failure streak.
#[utoipa::path(post, path = "/v1/webhooks/{id}/resume", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`")),
    responses(
        (status = 200, body = Endpoint),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn resume_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Endpoint>> {
    set_status(&state, &principal, &id, "enabled").await
}

/// Rotate the signing secret (`webhooks:write`). For 24 hours deliveries carry signatures with
/// both the new and the previous secret, so receivers can switch without losing any.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`")),
    responses(
        (status = 200, body = EndpointWithSecret),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<EndpointWithSecret>> {
    principal.require(Scope::WebhooksWrite)?;
    let (mut tx, mut endpoint) = load(&state, &principal, &id).await?;
    let now = state.clock.now_ms();
    let secret = signing::generate_secret();
    endpoint.previous_secret = Some(std::mem::replace(
        &mut endpoint.secret,
        state.secrets.seal(&secret),
    ));
    endpoint.previous_secret_until = Some(now + ROTATION_GRACE_MS);
    store::update_endpoint(&mut tx, &endpoint, now).await?;
    let endpoint = represent_one(&mut tx, &principal.tenant_id, endpoint).await?;
    tx.commit().await?;
    Ok(axum::Json(EndpointWithSecret { endpoint, secret }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TestFire {
    /// The event type to simulate (default `webhook.test`).
    pub event: Option<String>,
}

/// Test fire (`webhooks:write`): send a schema-valid synthetic payload of `event`, tagged
/// `"_synthetic": true`, to this endpoint whatever its filter, now, and answer with the delivery
/// and its attempt.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id, `ep_...`"), TestFire),
    responses(
        (status = 200, body = DeliveryWithAttempts),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn test_fire(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<TestFire>,
) -> Result<axum::Json<DeliveryWithAttempts>> {
    principal.require(Scope::WebhooksWrite)?;
    let name = query.event.as_deref().unwrap_or("webhook.test");
    let event_type = catalog::find(name).ok_or_else(|| {
        Error::invalid(
            "event",
            format!(
                "unknown event type {name:?}; valid types: {}",
                event_type_names()
            ),
        )
    })?;
    let tenant = &principal.tenant_id;
    let (tx, endpoint) = load(&state, &principal, &id).await?;
    tx.commit().await?;
    let data = catalog::synthetic(event_type);
    let delivery =
        delivery::fire_test(&state, tenant, &endpoint.id, event_type.name, &data).await?;
    Ok(axum::Json(with_attempts(&state, tenant, &delivery).await?))
}

/// An event type of the catalog.
#[derive(Serialize, ToSchema)]
pub struct EventTypeDoc {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the message's `data`.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    #[schema(value_type = Object)]
    pub example: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypes {
    pub data: Vec<EventTypeDoc>,
}

/// The event catalog: every type an endpoint can subscribe to, with its schema and an example
/// (`webhooks:read`).
#[utoipa::path(get, path = "/v1/event-types", tag = "webhooks",
    responses(
        (status = 200, body = EventTypes),
        AuthProblems,
    ))]
async fn event_types(principal: Principal) -> Result<axum::Json<EventTypes>> {
    principal.require(Scope::WebhooksRead)?;
    let data = CATALOG
        .iter()
        .map(|t| EventTypeDoc {
            name: t.name,
            description: t.description,
            schema: (t.schema)().to_value(),
            example: (t.example)(),
        })
        .collect();
    Ok(axum::Json(EventTypes { data }))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut samples, 0.50), Some(50));
        assert_eq!(percentile(&mut samples, 0.95), Some(95));
        assert_eq!(percentile(&mut [7], 0.95), Some(7));
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}
