//! Operational endpoints: liveness, readiness, Prometheus metrics, and the request metrics
//! middleware that feeds them.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::webhooks::store::EndpointCounters;

use super::error::{Error, Problem, Result};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, body = Health),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>> {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await;
    match ping {
        Ok(true) => Ok(axum::Json(Health { status: "ready" })),
        _ => Err(Error::Unavailable),
    }
}

/// Metrics in the Prometheus (OpenMetrics) text format. Open, unless the server is configured
/// with `SWITCHYARD_METRICS_TOKEN`: then `Authorization: Bearer <that token>` is required.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("metrics_token" = [])),
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        (status = 401, body = crate::http::error::Problem, content_type = "application/problem+json",
            description = "`unauthorized`: the metrics token is configured, and missing or wrong")))]
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    if let Some(token) = &state.config.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into();
        if !matches {
            return Err(Error::Unauthorized);
        }
    }
    let stats = state.queue.stats().await.map_err(anyhow::Error::from)?;
    state.metrics.observe_queue(&stats);
    let mut endpoints = Vec::new();
    let mut postbacks = Vec::new();
    for tenant in crate::tenants::all_ids(state.db.pool()).await? {
        let mut tx = state.db.read(&tenant).await?;
        let counters = crate::webhooks::store::counters(&mut tx, &tenant).await?;
        tx.commit().await?;
        endpoints.extend(counters);
        let mut tx = state.db.read(&tenant).await?;
        let counters = crate::postbacks::store::counters(&mut tx, &tenant).await?;
        tx.commit().await?;
        postbacks.extend(counters);
    }
    state.metrics.observe_endpoints(&endpoints);
    state.metrics.observe_postbacks(&postbacks);
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry)
        .map_err(|e| Error::Internal(anyhow::anyhow!("encoding metrics: {e}")))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

impl RequestLabels {
    fn new(method: &str, route: &str, status: StatusCode) -> Self {
        RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status: status.as_u16().to_string(),
        }
    }
}

impl RouteLabels {
    fn new(method: &str, route: &str) -> Self {
        RouteLabels {
            method: method.to_owned(),
            route: route.to_owned(),
        }
    }
}

/// The click router's route template.
pub const CLICK_ROUTE: &str = "/r/{key}";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    tenant: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PostbackLabels {
    tenant: String,
    partner: String,
    postback: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    queue: String,
    kind: String,
}

/// The server's metric registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
    /// The click router's usual answer (302), resolved once: see [`Metrics::count_click`].
    click_redirects: Counter,
    click_durations: Histogram,
    jobs: Family<JobLabels, Gauge>,
    oldest_due: Family<KindLabels, Gauge<f64, AtomicU64>>,
    endpoint_successes: Family<EndpointLabels, Gauge>,
    endpoint_failures: Family<EndpointLabels, Gauge>,
    endpoint_streak: Family<EndpointLabels, Gauge>,
    endpoint_enabled: Family<EndpointLabels, Gauge>,
    postback_successes: Family<PostbackLabels, Gauge>,
    postback_failures: Family<PostbackLabels, Gauge>,
    postback_enabled: Family<PostbackLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template",
            durations.clone(),
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        let oldest_due = Family::<KindLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "jobs",
            "Jobs in the queue, by queue, kind and state",
            jobs.clone(),
        );
        registry.register(
            "jobs_oldest_due_age_seconds",
            "How long the oldest due, unclaimed job of a kind has waited",
            oldest_due.clone(),
        );
        let endpoint_successes = Family::<EndpointLabels, Gauge>::default();
        let endpoint_failures = Family::<EndpointLabels, Gauge>::default();
        let endpoint_streak = Family::<EndpointLabels, Gauge>::default();
        let endpoint_enabled = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "webhook_endpoint_successes",
            "Successful delivery attempts of a webhook endpoint since it was created",
            endpoint_successes.clone(),
        );
        registry.register(
            "webhook_endpoint_failures",
            "Failed delivery attempts of a webhook endpoint since it was created",
            endpoint_failures.clone(),
        );
        registry.register(
            "webhook_endpoint_consecutive_failures",
            "Failed attempts of a webhook endpoint since its last success",
            endpoint_streak.clone(),
        );
        registry.register(
            "webhook_endpoint_enabled",
            "1 while a webhook endpoint receives deliveries, 0 when paused or disabled",
            endpoint_enabled.clone(),
        );
        let postback_successes = Family::<PostbackLabels, Gauge>::default();
        let postback_failures = Family::<PostbackLabels, Gauge>::default();
        let postback_enabled = Family::<PostbackLabels, Gauge>::default();
        registry.register(
            "postback_successes",
            "Successful fires of a partner's postback since it was created",
            postback_successes.clone(),
        );
        registry.register(
            "postback_failures",
            "Failed fires of a partner's postback since it was created",
            postback_failures.clone(),
        );
        registry.register(
            "postback_enabled",
            "1 while a partner's postback fires, 0 when disabled",
            postback_enabled.clone(),
        );
        let click_redirects = requests
            .get_or_create(&RequestLabels::new("GET", CLICK_ROUTE, StatusCode::FOUND))
            .clone();
        let click_durations = durations
            .get_or_create(&RouteLabels::new("GET", CLICK_ROUTE))
            .clone();
        Self {
            registry,
            requests,
            durations,
            click_redirects,
            click_durations,
            jobs,
            oldest_due,
            endpoint_successes,
            endpoint_failures,
            endpoint_streak,
            endpoint_enabled,
            postback_successes,
            postback_failures,
            postback_enabled,
        }
    }
}

impl Metrics {
    /// Refreshes the endpoint gauges from fresh counters (called at scrape time).
    fn observe_endpoints(&self, endpoints: &[EndpointCounters]) {
        for family in [
            &self.endpoint_successes,
            &self.endpoint_failures,
            &self.endpoint_streak,
            &self.endpoint_enabled,
        ] {
            family.clear();
        }
        for endpoint in endpoints {
            let labels = EndpointLabels {
                tenant: endpoint.tenant_id.clone(),
                endpoint: endpoint.id.clone(),
            };
            let enabled = i64::from(endpoint.status == "enabled");
            self.endpoint_successes
                .get_or_create(&labels)
                .set(endpoint.success_count);
            self.endpoint_failures
                .get_or_create(&labels)
                .set(endpoint.failure_count);
            self.endpoint_streak
                .get_or_create(&labels)
                .set(endpoint.consecutive_failures);
            self.endpoint_enabled.get_or_create(&labels).set(enabled);
        }
    }

    /// Refreshes the postback gauges from fresh counters (called at scrape time).
    fn observe_postbacks(&self, postbacks: &[crate::postbacks::store::StoredPostback]) {
        for family in [
            &self.postback_successes,
            &self.postback_failures,
            &self.postback_enabled,
        ] {
            family.clear();
        }
        for postback in postbacks {
            let labels = PostbackLabels {
                tenant: postback.tenant_id.clone(),
                partner: postback.partner_id.clone(),
                postback: postback.id.clone(),
            };
            self.postback_successes
                .get_or_create(&labels)
                .set(postback.success_count);
            self.postback_failures
                .get_or_create(&labels)
                .set(postback.failure_count);
            self.postback_enabled
                .get_or_create(&labels)
                .set(postback.enabled);
        }
    }

    /// Refreshes the queue gauges from fresh counts (called at scrape time).
    fn observe_queue(&self, stats: &job_queue::Stats) {
        self.jobs.clear();
        self.oldest_due.clear();
        for kind in &stats.kinds {
            for (state, count) in [
                ("available", kind.available),
                ("running", kind.running),
                ("done", kind.done),
                ("dead", kind.dead),
            ] {
                let labels = JobLabels {
                    queue: kind.queue.clone(),
                    kind: kind.kind.clone(),
                    state: state.to_owned(),
                };
                self.jobs.get_or_create(&labels).set(count);
            }
            let labels = KindLabels {
                queue: kind.queue.clone(),
                kind: kind.kind.clone(),
            };
            self.oldest_due
                .get_or_create(&labels)
                .set(kind.oldest_available_age_ms as f64 / 1000.0);
        }
    }
}

impl Metrics {
    /// Counts and times one answered request.
    fn count(&self, method: &str, route: &str, status: StatusCode, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels::new(method, route, status))
            .inc();
        self.durations
            .get_or_create(&RouteLabels::new(method, route))
            .observe(elapsed.as_secs_f64());
    }

    /// Counts and times one answer of the click router: a redirect is two atomic updates on
    /// series resolved at start, with no label strings built and no map looked up.
    pub fn count_click(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        if method == Method::GET && status == StatusCode::FOUND {
            self.click_redirects.inc();
            self.click_durations.observe(elapsed.as_secs_f64());
        } else {
            self.count(method.as_str(), CLICK_ROUTE, status, elapsed);
        }
    }
}

/// Middleware: counts and times every request by its route template (never the raw path, so
/// ids in URLs cannot blow up the number of series).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.count(
        method.as_str(),
        &route,
        response.status(),
        started.elapsed(),
    );
    response
}
