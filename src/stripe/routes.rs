//! `/v1/stripe`: the tenant's Stripe settings (admin), the public webhook Stripe calls, and the
//! stored events with what each became (admin).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::http::auth::TenantPrefix;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Problem, Result,
};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};
use crate::keys::Principal;
use crate::tenants;

use super::signature;
use super::{Accepted, Settings, StoredEvent, MAX_SECRETS};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(receive))
        .routes(routes!(list_events))
        .routes(routes!(get_event))
        .routes(routes!(reprocess_event))
        .routes(routes!(report_usage))
        .routes(routes!(sdk))
}

/// The merchant-site script, embedded in the binary.
const SDK: &str = include_str!("assets/sdk.js");

/// A dependency-free script for the merchant's site (public): it keeps the click id from the
/// landing URL in a first-party cookie (`sy_click_id`, for `data-days`, default 30) and exposes
/// it as `Switchyard.clickId()`, for Checkout's `client_reference_id`.
#[utoipa::path(get, path = "/sdk.js", tag = "stripe", security(()),
    responses((status = 200, description = "The script", content_type = "text/javascript",
        body = String)))]
async fn sdk() -> impl axum::response::IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SDK,
    )
}

/// What the API shows of the Stripe settings: never a secret.
#[derive(Serialize, ToSchema)]
pub struct StripeSettings {
    pub has_secret_key: bool,
    /// `test` or `live`, from the key.
    pub key_mode: Option<String>,
    /// The key's last four characters, to recognise it.
    pub key_last4: Option<String>,
    /// How many signing secrets are set for this account's events.
    pub webhook_secret_count: usize,
    /// How many signing secrets are set for connected accounts' events.
    pub connect_webhook_secret_count: usize,
    /// Paste into Stripe as the endpoint URL of this account's event destination.
    pub webhook_url: String,
    /// Paste into Stripe as the endpoint URL of the connected accounts' event destination
    /// (the same route: any configured secret may sign).
    pub connect_webhook_url: String,
    pub updated_at: Option<String>,
}

fn shown(state: &AppState, slug: &str, settings: &Settings) -> StripeSettings {
    let prefix = match state.config.tenancy {
        crate::config::Tenancy::Multi => format!("/t/{slug}"),
        crate::config::Tenancy::Single => String::new(),
    };
    let url = format!("{}{prefix}/v1/stripe/webhook", state.config.public_url());
    StripeSettings {
        has_secret_key: settings.secret_key.is_some(),
        key_mode: settings.key_mode().map(str::to_owned),
        key_last4: settings
            .secret_key
            .as_deref()
            .map(|k| k[k.len().saturating_sub(4)..].to_owned()),
        webhook_secret_count: settings.webhook_secrets.len(),
        connect_webhook_secret_count: settings.connect_webhook_secrets.len(),
        webhook_url: url.clone(),
        connect_webhook_url: url,
        updated_at: settings.updated_at.map(rfc3339),
    }
}

/// The Stripe settings (admin). Shows whether a key is set, its mode and last four characters,
/// how many signing secrets are set, and the URL to give Stripe; never a secret.
#[utoipa::path(get, path = "/v1/stripe", tag = "stripe",
    responses((status = 200, body = StripeSettings), AuthProblems))]
async fn get_settings(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<StripeSettings>> {
    principal.require_admin()?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let settings = super::settings(&state, &mut tx, tenant, &principal.tenant_slug).await?;
    tx.commit().await?;
    Ok(axum::Json(shown(&state, &principal.tenant_slug, &settings)))
}

#[derive(Deserialize, ToSchema)]
pub struct PutStripeSettings {
    /// A secret or restricted key, `sk_test_...`, `sk_live_...`, `rk_test_...` or
    /// `rk_live_...`; omit or null for none. Stored encrypted; never shown again.
    #[schema(max_length = 255)]
    pub secret_key: Option<String>,
    /// Signing secrets (`whsec_...`) of this account's event destinations, at most 10.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub webhook_secrets: Vec<String>,
    /// Signing secrets of the connected accounts' event destinations, at most 10.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub connect_webhook_secrets: Vec<String>,
}

fn check_secrets(field: &str, secrets: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if secrets.len() > MAX_SECRETS {
        errors.push(FieldError::new(field, "at most 10 signing secrets"));
    }
    let mut kept: Vec<String> = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        let secret = secret.trim();
        let plausible = secret.len() > "whsec_".len()
            && secret.len() <= 255
            && secret.starts_with("whsec_")
            && secret.bytes().all(|b| b.is_ascii_graphic());
        if !plausible {
            errors.push(FieldError::new(
                &format!("{field}[{i}]"),
                "must be a Stripe signing secret, whsec_...",
            ));
        } else if !kept.iter().any(|k| k == secret) {
            kept.push(secret.to_owned());
        }
    }
    kept
}

/// Replace the Stripe settings (admin). Secrets are stored AES-256-GCM encrypted; the answer
/// shows what `GET` shows.
#[utoipa::path(put, path = "/v1/stripe", tag = "stripe", request_body = PutStripeSettings,
    responses((status = 200, body = StripeSettings), AuthProblems, InvalidProblem))]
async fn put_settings(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<PutStripeSettings>,
) -> Result<axum::Json<StripeSettings>> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let secret_key = body.secret_key.map(|k| k.trim().to_owned());
    if secret_key
        .as_deref()
        .is_some_and(|k| k.len() > 255 || super::key_mode(k).is_none())
    {
        errors.push(FieldError::new(
            "secret_key",
            "must be a Stripe secret or restricted key: sk_test_, sk_live_, rk_test_ or rk_live_",
        ));
    }
    let settings = Settings {
        secret_key,
        webhook_secrets: check_secrets("webhook_secrets", &body.webhook_secrets, &mut errors),
        connect_webhook_secrets: check_secrets(
            "connect_webhook_secrets",
            &body.connect_webhook_secrets,
            &mut errors,
        ),
        updated_at: None,
    };
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    super::save_settings(&state, &mut tx, tenant, &settings).await?;
    let saved = super::settings(&state, &mut tx, tenant, &principal.tenant_slug).await?;
    tx.commit().await?;
    Ok(axum::Json(shown(&state, &principal.tenant_slug, &saved)))
}

#[derive(Serialize, ToSchema)]
pub struct Received {
    pub received: bool,
    /// The Stripe event id.
    pub id: String,
    /// True when Stripe had sent this event before: nothing was added.
    pub duplicate: bool,
}

/// Stripe's webhook (public: authenticated by `Stripe-Signature`, no API key). The default
/// tenant's at `/v1/stripe/webhook`, another tenant's at `/t/{slug}/v1/stripe/webhook`. The
/// signature is checked on the raw body against every configured signing secret, with a
/// tolerance of 300 s either way; the event is stored and queued for processing before the 200.
/// A repeated event id answers 200 with `duplicate: true` and adds nothing.
#[utoipa::path(post, path = "/v1/stripe/webhook", tag = "stripe", security(()),
    request_body(content = Value, description = "A Stripe event, exactly as Stripe signed it"),
    params(("Stripe-Signature" = String, Header, description = "`t=<unix>,v1=<hex>`")),
    responses(
        (status = 200, body = Received),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`invalid_signature` (missing, wrong or stale signature, or no tenant \
                of this slug) or `invalid_event` (signed, but not a Stripe event)"),
        (status = 413, body = Problem, content_type = "application/problem+json",
            description = "`payload_too_large`"),
        (status = 429, body = Problem, content_type = "application/problem+json",
            description = "`rate_limited` (per client address); Stripe retries"),
    ))]
async fn receive(
    State(state): State<AppState>,
    prefix: Option<Extension<TenantPrefix>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Received>> {
    let body = body.map_err(|_| Error::PayloadTooLarge)?;
    let slug = prefix.map_or(tenants::DEFAULT_SLUG.to_owned(), |Extension(p)| p.0);
    // One read: the tenant registry has no row-level security, and the tenant's own settings
    // are read once the transaction is scoped to it.
    // An unknown slug is refused like a bad signature: the answer tells no one which tenants
    // exist.
    let refused = || Error::BadRequest {
        code: "invalid_signature",
        detail: "the Stripe-Signature header does not verify".to_owned(),
    };
    let mut tx = state.db.pool().begin().await?;
    let Some(tenant) = tenants::find_by_slug(&mut tx, &slug).await? else {
        tracing::warn!(%slug, "refused a Stripe webhook for no such tenant");
        return Err(refused());
    };
    state
        .db
        .set_local(&mut tx, crate::db::TENANT_SETTING, &tenant.id)
        .await?;
    let settings = super::settings(&state, &mut tx, &tenant.id, &tenant.slug).await?;
    tx.commit().await?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now_secs = state.clock.now_ms().div_euclid(1000);
    if let Err(reason) = signature::verify(header, &body, &settings.signing_secrets(), now_secs) {
        tracing::warn!(tenant = %tenant.slug, %reason, "refused a Stripe webhook");
        return Err(refused());
    }
    let (id, duplicate) = match super::accept(&state, &tenant.id, &settings, &body).await? {
        Accepted::New(event) => (event.id, false),
        Accepted::Repeat => (envelope_id(&body), true),
    };
    Ok(axum::Json(Received {
        received: true,
        id,
        duplicate,
    }))
}

fn envelope_id(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A stored Stripe event and what it became.
#[derive(Serialize, ToSchema)]
pub struct StripeEvent {
    /// The Stripe event id, `evt_...`.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub livemode: bool,
    /// The connected account, for Connect events.
    pub account: Option<String>,
    /// `received` (not processed yet), `processed`, `unattributed`, `recorded` (kept; nothing
    /// to earn or reverse), `ignored` (a type or mode this hub does not act on) or `failed`.
    pub state: String,
    /// What it became: the conversion (with its attribution and commission), or why nothing.
    pub outcome: Option<Value>,
    pub received_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct StripeEventWithPayload {
    #[serde(flatten)]
    pub event: StripeEvent,
    /// The event as Stripe sent it.
    pub payload: Value,
}

impl From<&StoredEvent> for StripeEvent {
    fn from(e: &StoredEvent) -> Self {
        StripeEvent {
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            livemode: e.livemode != 0,
            account: e.account.clone(),
            state: e.state.clone(),
            outcome: e
                .outcome
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok()),
            received_at: rfc3339(e.received_at),
            updated_at: rfc3339(e.updated_at),
        }
    }
}

const STATES: [&str; 6] = [
    "received",
    "processed",
    "unattributed",
    "recorded",
    "ignored",
    "failed",
];

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// A Stripe event type, e.g. `invoice.paid`.
    #[param(max_length = 255)]
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `received`, `processed`, `unattributed`, `recorded`, `ignored` or `failed`.
    pub state: Option<String>,
    /// Page size, 1 to 200 (default 100).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Stored Stripe events, newest first (admin).
#[utoipa::path(get, path = "/v1/stripe/events", tag = "stripe", params(ListEvents),
    responses((status = 200, body = List<StripeEvent>), AuthProblems, InvalidProblem))]
async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListEvents>,
) -> Result<axum::Json<List<StripeEvent>>> {
    principal.require_admin()?;
    if query.state.as_deref().is_some_and(|s| !STATES.contains(&s)) {
        return Err(Error::invalid(
            "state",
            format!("must be one of {}", STATES.join(", ")),
        ));
    }
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let rows = super::list_events(
        &mut tx,
        tenant,
        query.event_type.as_deref(),
        query.state.as_deref(),
        &page,
    )
    .await?;
    tx.commit().await?;
    let list = page.finish(rows, |e| (e.received_at, &e.id));
    Ok(axum::Json(List {
        data: list.data.iter().map(StripeEvent::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

/// One stored Stripe event, with its payload and what it became (admin).
#[utoipa::path(get, path = "/v1/stripe/events/{id}", tag = "stripe",
    params(("id" = String, Path, description = "The Stripe event id, `evt_...`")),
    responses((status = 200, body = StripeEventWithPayload), AuthProblems, NotFoundProblem))]
async fn get_event(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<StripeEventWithPayload>> {
    principal.require_admin()?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let event = super::find_event(&mut tx, tenant, &id)
        .await?
        .ok_or_else(|| Error::not_found("Stripe event"))?;
    tx.commit().await?;
    Ok(axum::Json(StripeEventWithPayload {
        event: StripeEvent::from(&event),
        payload: serde_json::from_str(&event.payload).unwrap_or(Value::Null),
    }))
}

/// Process a stored event again (admin), e.g. one that was `unattributed` because its
/// customer became known later. An event that already became a conversion keeps it.
#[utoipa::path(post, path = "/v1/stripe/events/{id}/reprocess", tag = "stripe",
    params(("id" = String, Path, description = "The Stripe event id, `evt_...`")),
    responses((status = 202, body = StripeEvent, description = "Queued for processing"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`stripe_event_ignored`: of another mode than the key's, or a \
                connected account's event other than `account.updated`"),
        AuthProblems, NotFoundProblem))]
async fn reprocess_event(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<StripeEvent>)> {
    principal.require_admin()?;
    let event = super::reprocess(&state, &principal.tenant_id, &principal.tenant_slug, &id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(StripeEvent::from(&event))))
}

#[derive(Serialize, ToSchema)]
pub struct UsageReports {
    pub reports: Vec<super::meters::UsageReport>,
}

/// Report every billed tenant's attributed revenue to the operator's Stripe meter now
/// (operator: an admin key of the default tenant). Runs daily by itself; each tenant's window
/// ends five minutes ago (conversions still committing are left to the next window), and a
/// window that failed is sent again, unchanged, by the next run.
#[utoipa::path(post, path = "/v1/billing/report-usage", tag = "stripe",
    responses(
        (status = 200, body = UsageReports),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`billing_not_configured`: SWITCHYARD_PLATFORM_STRIPE_KEY is not set"),
        AuthProblems,
    ))]
async fn report_usage(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<UsageReports>> {
    principal.require_operator(state.config.tenancy)?;
    if state.config.platform_stripe_key.is_none() {
        return Err(Error::Conflict {
            code: "billing_not_configured",
            detail: "set SWITCHYARD_PLATFORM_STRIPE_KEY to report usage to Stripe".to_owned(),
        });
    }
    let until = state.clock.now_ms() - super::meters::GRACE_MS;
    let reports = super::meters::report_all(&state, until).await?;
    Ok(axum::Json(UsageReports {
        reports: reports.into_iter().map(|(report, _)| report).collect(),
    }))
}
