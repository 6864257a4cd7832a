//! HTTP: router assembly, the cross-cutting layers (request ids, tracing, metrics, rate limits,
//! body limits, panics), the error type, extractors, pagination and the OpenAPI document.
//! Each slice owns its own routes; this module only puts them together.

pub mod auth;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod rate_limit;
pub mod validate;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::Layer as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;

use self::auth::TenantPrefix;
use self::error::problem;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The application router with every layer, ready to serve.
///
/// The click router `GET /r/{key}` is served before the API's layers, with only the per-IP rate
/// limit and the request metrics (one middleware) and the panic guard: it is the hottest path,
/// and a redirect carries no key, no body and no log line of its own. (The API router documents
/// it too, but never sees its requests.)
pub fn router(state: AppState) -> Router {
    let api = api_router(state.clone());
    Router::new()
        .route(
            ops::CLICK_ROUTE,
            axum::routing::get(crate::links::routes::follow),
        )
        // Set before the layers, so a 405 here is counted and limited like any answer.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard_clicks))
        .layer(CatchPanicLayer::custom(internal_error))
        .with_state(state)
        // The tenant prefix is rewritten before the API router matches the path.
        .fallback_service(middleware::from_fn(tenant_prefix).layer(api))
}

fn api_router(state: AppState) -> Router {
    let (api, document) = openapi::split();
    let max_body = state.config.max_body_bytes;
    let trusted = state.config.trusted_proxies.clone();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::replay,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), ops::track))
        .layer(CatchPanicLayer::custom(internal_error))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // The client as the per-IP limit sees it: X-Forwarded-For only from a
                    // trusted proxy.
                    let client = rate_limit::client_ip(&trusted, request)
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id, client)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The click route's one middleware, in place of the API's `track` and `authenticate`: the
/// per-IP rate limit (a click never authenticates, so an `Authorization` header changes
/// nothing), and the request metrics through [`ops::Metrics::count_click`].
async fn guard_clicks(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = match rate_limit::check_ip(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(limited) => limited.into_response(),
    };
    state
        .metrics
        .count_click(&method, response.status(), started.elapsed());
    response
}

/// Middleware around the API router: `/t/{slug}/v1/...` is served as `/v1/...` with the slug
/// remembered, for authentication to check against the key's tenant (and for the Stripe webhook,
/// which has no key, to name its tenant). It runs before the API router's routing, so the
/// rewritten path is the one matched.
pub async fn tenant_prefix(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if let Some((slug, rest)) = path
        .strip_prefix("/t/")
        .and_then(|p| p.split_once('/'))
        .filter(|(_, rest)| rest.starts_with("v1/") || *rest == "v1")
    {
        let slug = slug.to_owned();
        let path_and_query = match request.uri().query() {
            Some(q) => format!("/{rest}?{q}"),
            None => format!("/{rest}"),
        };
        if let Ok(uri) = Uri::builder().path_and_query(path_and_query).build() {
            *request.uri_mut() = uri;
            request.extensions_mut().insert(TenantPrefix(slug));
        }
    }
    next.run(request).await
}

/// A handler that panicked answers 500 `internal`, and the server goes on.
fn internal_error(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        None,
        Vec::new(),
    )
}

async fn not_found(uri: Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        Some(format!("no route for {}", uri.path())),
        Vec::new(),
    )
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        Some("this route does not accept that method".to_owned()),
        Vec::new(),
    )
}
