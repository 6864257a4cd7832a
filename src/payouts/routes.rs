//! `/v1/payouts`, `/v1/payout-runs`, a partner's payout account and balance, the payout
//! settings, and the public onboarding routes Stripe sends partners back to.
//!
//! Reading needs `payouts:read` (a partner's own key reads its own payouts, account and
//! balance); running, marking paid and the settings are admin-only.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::commissions::routes::Commission;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Problem, Result,
};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};
use crate::keys::{KeyKind, Principal, Scope};
use crate::partners::{self, authorize};

use super::store::{self, PayoutFilter, StoredAccount, StoredPayout, StoredRun};
use super::{Carried, CurrencyBalance, Method, RunResult, Settings, Settled};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(open_account, get_account))
        .routes(routes!(refresh_onboarding))
        .routes(routes!(onboarding_returned))
        .routes(routes!(run_payouts))
        .routes(routes!(list_payouts))
        .routes(routes!(export_csv))
        .routes(routes!(get_payout))
        .routes(routes!(mark_paid))
        .routes(routes!(list_runs))
        .routes(routes!(partner_balance))
}

// --- settings --------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct PayoutSettings {
    pub method: Method,
    /// The smallest payout, in minor units of each currency; smaller balances carry over.
    pub payout_minimum: i64,
    /// Whether a refund of a paid commission is taken from the partner's next payouts.
    pub clawback_paid_refunds: bool,
    /// Where Stripe sends a partner after onboarding; `null`: the hub's own page.
    pub onboarding_return_url: Option<String>,
    /// When runs happen (`SWITCHYARD_PAYOUT_SCHEDULE`, UTC), as a cron expression with
    /// seconds; `null` when runs are on demand only.
    pub schedule: Option<String>,
    pub updated_at: Option<String>,
}

fn shown(state: &AppState, settings: &Settings) -> PayoutSettings {
    PayoutSettings {
        method: settings.method,
        payout_minimum: settings.payout_minimum,
        clawback_paid_refunds: settings.clawback_paid_refunds,
        onboarding_return_url: settings.onboarding_return_url.clone(),
        schedule: state.config.payout_schedule.cron(),
        updated_at: settings.updated_at.map(rfc3339),
    }
}

/// The payout settings (admin).
#[utoipa::path(get, path = "/v1/payouts/settings", tag = "payouts",
    responses((status = 200, body = PayoutSettings), AuthProblems))]
async fn get_settings(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<PayoutSettings>> {
    principal.require_admin()?;
    let mut tx = state.db.read(&principal.tenant_id).await?;
    let settings = super::settings(&mut tx, &principal.tenant_id).await?;
    tx.commit().await?;
    Ok(axum::Json(shown(&state, &settings)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPayoutSettings {
    /// Default `stripe_connect`.
    pub method: Option<Method>,
    /// Minor units, 0 to 10^15; default 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub payout_minimum: Option<i64>,
    /// Default false: refunds of paid commissions are recorded, not clawed back.
    pub clawback_paid_refunds: Option<bool>,
    /// An http(s) URL, or null for the hub's own page.
    #[schema(max_length = 2048)]
    pub onboarding_return_url: Option<String>,
}

/// Replace the payout settings (admin); omitted fields take their defaults.
#[utoipa::path(put, path = "/v1/payouts/settings", tag = "payouts",
    request_body = PutPayoutSettings,
    responses((status = 200, body = PayoutSettings), AuthProblems, InvalidProblem))]
async fn put_settings(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<PutPayoutSettings>,
) -> Result<axum::Json<PayoutSettings>> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let minimum = body.payout_minimum.unwrap_or(0);
    if !(0..=crate::commissions::MAX_AMOUNT).contains(&minimum) {
        errors.push(FieldError::new(
            "payout_minimum",
            "must be between 0 and 10^15 minor units",
        ));
    }
    let return_url = body.onboarding_return_url.map(|u| u.trim().to_owned());
    if let Some(url) = &return_url {
        let valid = url.len() <= 2048
            && url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !valid {
            errors.push(FieldError::new(
                "onboarding_return_url",
                "must be an absolute http(s) URL of at most 2048 characters",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let settings = Settings {
        method: body.method.unwrap_or(Method::StripeConnect),
        payout_minimum: minimum,
        clawback_paid_refunds: body.clawback_paid_refunds.unwrap_or(false),
        onboarding_return_url: return_url,
        updated_at: None,
    };
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    super::save_settings(&mut tx, tenant, &settings, state.clock.now_ms()).await?;
    let saved = super::settings(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(axum::Json(shown(&state, &saved)))
}

// --- payout accounts -------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct PayoutAccount {
    pub partner_id: String,
    /// `none` (no account yet), `onboarding`, `ready` or `restricted`.
    pub status: String,
    /// The Express connected account, `acct_...`.
    pub stripe_account_id: Option<String>,
    /// What Stripe still needs (`requirements.currently_due`).
    pub currently_due: Vec<String>,
    /// Why Stripe disabled payouts, if it did (`requirements.disabled_reason`).
    pub disabled_reason: Option<String>,
    pub updated_at: Option<String>,
}

fn account_of(partner_id: &str, account: Option<&StoredAccount>) -> PayoutAccount {
    match account {
        Some(a) => PayoutAccount {
            partner_id: partner_id.to_owned(),
            status: a.status.clone(),
            stripe_account_id: Some(a.stripe_account_id.clone()),
            currently_due: serde_json::from_str(&a.currently_due).unwrap_or_default(),
            disabled_reason: a.disabled_reason.clone(),
            updated_at: Some(rfc3339(a.updated_at)),
        },
        None => PayoutAccount {
            partner_id: partner_id.to_owned(),
            status: "none".to_owned(),
            stripe_account_id: None,
            currently_due: Vec::new(),
            disabled_reason: None,
            updated_at: None,
        },
    }
}

#[derive(Serialize, ToSchema)]
pub struct Onboarding {
    pub account: PayoutAccount,
    /// Stripe's hosted onboarding: single use, valid for minutes. When it expires, Stripe
    /// sends the partner to the hub, which mints a new one.
    pub onboarding_url: String,
    pub expires_at: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// The account's country (ISO 3166-1 alpha-2) when it is created; default: the platform's.
    #[schema(min_length = 2, max_length = 2)]
    pub country: Option<String>,
}

/// Open the partner's payout account (admin, or the partner's own key): creates its Stripe
/// Express account once, and answers a fresh onboarding link every time.
#[utoipa::path(post, path = "/v1/partners/{id}/payout-account", tag = "payouts",
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    request_body(content = OpenAccount, description = "Optional: `{}` or no body"),
    responses(
        (status = 200, body = Onboarding),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`stripe_not_configured` (no Stripe key) or `partner_revoked`"),
        (status = 502, body = Problem, content_type = "application/problem+json",
            description = "`stripe_error`: Stripe refused or could not be reached"),
        AuthProblems, NotFoundProblem, InvalidProblem))]
async fn open_account(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Onboarding>> {
    authorize(&principal, None, true, &id)?;
    let body: OpenAccount = optional_body(&body)?;
    let country = body.country.map(|c| c.trim().to_ascii_uppercase());
    if country
        .as_deref()
        .is_some_and(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(Error::invalid(
            "country",
            "must be an ISO 3166-1 alpha-2 code",
        ));
    }
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let partner = partners::existing(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    let onboarding = super::onboard(&state, &partner, country.as_deref()).await?;
    Ok(axum::Json(Onboarding {
        account: account_of(&id, Some(&onboarding.account)),
        onboarding_url: onboarding.url,
        expires_at: onboarding.expires_at.map(|secs| rfc3339(secs * 1000)),
    }))
}

/// A JSON body that may be absent (no bytes): its defaults then.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::InvalidBody(e.to_string()))
}

/// The partner's payout account and its readiness (`payouts:read`, or the partner's own key).
#[utoipa::path(get, path = "/v1/partners/{id}/payout-account", tag = "payouts",
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses((status = 200, body = PayoutAccount), AuthProblems, NotFoundProblem))]
async fn get_account(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<PayoutAccount>> {
    authorize(&principal, Some(Scope::PayoutsRead), true, &id)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    partners::existing(&mut tx, tenant, &id).await?;
    let account = store::account(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(axum::Json(account_of(&id, account.as_ref())))
}

/// Stripe's `refresh_url` for a partner's onboarding (public: the token in the path is the
/// credential): mints a new onboarding link and redirects to it.
#[utoipa::path(get, path = "/v1/payout-onboarding/{token}", tag = "payouts", security(()),
    params(("token" = String, Path, description = "From the link Stripe followed")),
    responses(
        (status = 303, description = "To a new Stripe onboarding link"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "`not_found`: no such onboarding"),
        (status = 502, body = Problem, content_type = "application/problem+json",
            description = "`stripe_error`"),
    ))]
async fn refresh_onboarding(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response> {
    let (tenant, partner) = super::read_onboarding_token(&state, &token)
        .ok_or_else(|| Error::not_found("onboarding"))?;
    let url = super::refresh_link(&state, &tenant, &partner).await?;
    Ok(Redirect::to(&url).into_response())
}

/// Where Stripe returns a partner after onboarding, unless the tenant set its own
/// `onboarding_return_url` (public: the token is the credential): the account is re-read from
/// Stripe and its status shown.
#[utoipa::path(get, path = "/v1/payout-onboarding/{token}/return", tag = "payouts",
    security(()),
    params(("token" = String, Path, description = "From the link Stripe followed")),
    responses(
        (status = 200, description = "A page saying whether payouts are ready",
            content_type = "text/html", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "`not_found`: no such onboarding"),
        (status = 502, body = Problem, content_type = "application/problem+json",
            description = "`stripe_error`"),
    ))]
async fn onboarding_returned(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response> {
    let (tenant, partner) = super::read_onboarding_token(&state, &token)
        .ok_or_else(|| Error::not_found("onboarding"))?;
    let account = super::refresh_account(&state, &tenant, &partner)
        .await?
        .ok_or_else(|| Error::not_found("onboarding"))?;
    let message = match account.status.as_str() {
        "ready" => "Your payout account is ready. You can close this page.",
        "restricted" => "Stripe needs more information before you can be paid.",
        _ => "Your onboarding is not finished yet.",
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payouts</title>\
         </head><body><main><h1>Payouts</h1><p id=\"status\" data-status=\"{}\">{message}</p>\
         </main></body></html>",
        account.status
    );
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response())
}

// --- runs ------------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RunPayouts {
    /// Only preview: nothing is written or paid.
    #[serde(default)]
    pub dry_run: bool,
}

/// Run payouts now (admin): one payout per partner and currency whose approved commissions,
/// less open clawbacks, reach the minimum; the rest carries over, listed with the reason.
/// Transfers start at once (Stripe Connect); manual payouts wait to be marked paid.
#[utoipa::path(post, path = "/v1/payouts/run", tag = "payouts",
    request_body(content = RunPayouts, description = "Optional: `{}` or no body"),
    responses((status = 200, body = RunResult), AuthProblems, InvalidProblem))]
async fn run_payouts(
    State(state): State<AppState>,
    principal: Principal,
    body: Bytes,
) -> Result<axum::Json<RunResult>> {
    principal.require_admin()?;
    let body: RunPayouts = optional_body(&body)?;
    let result = super::run(&state, &principal.tenant_id, "manual", body.dry_run).await?;
    Ok(axum::Json(result))
}

#[derive(Serialize, ToSchema)]
pub struct PayoutRun {
    pub id: String,
    /// `schedule` or `manual`.
    pub triggered_by: String,
    pub payout_count: i64,
    /// The balances it did not pay.
    pub carried: Vec<Carried>,
    pub created_at: String,
}

impl From<StoredRun> for PayoutRun {
    fn from(r: StoredRun) -> Self {
        PayoutRun {
            carried: serde_json::from_str(&r.carried).unwrap_or_default(),
            created_at: rfc3339(r.created_at),
            id: r.id,
            triggered_by: r.triggered_by,
            payout_count: r.payout_count,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListPage {
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Payout runs, newest first (`payouts:read`; not for partner keys).
#[utoipa::path(get, path = "/v1/payout-runs", tag = "payouts", params(ListPage),
    responses((status = 200, body = List<PayoutRun>), AuthProblems, InvalidProblem))]
async fn list_runs(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListPage>,
) -> Result<axum::Json<List<PayoutRun>>> {
    principal.require(Scope::PayoutsRead)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let mut tx = state.db.read(&principal.tenant_id).await?;
    let rows = store::list_runs(&mut tx, &principal.tenant_id, &page).await?;
    tx.commit().await?;
    let list = page.finish(rows, |r| (r.created_at, &r.id));
    Ok(axum::Json(List {
        data: list.data.into_iter().map(PayoutRun::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

// --- payouts ---------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct Payout {
    pub id: String,
    pub run_id: String,
    pub partner_id: String,
    /// ISO 4217.
    pub currency: String,
    /// What is paid (minor units): `commissions_amount - clawed_back`, always above zero.
    pub amount: i64,
    pub commissions_amount: i64,
    /// Clawbacks this payout absorbed.
    pub clawed_back: i64,
    pub commission_count: i64,
    pub method: Method,
    /// `pending`, `paid`, `failed` or `reversed`.
    pub status: String,
    /// The connected account paid, `acct_...` (Stripe Connect).
    pub destination: Option<String>,
    /// The Stripe transfer, `tr_...`.
    pub transfer_id: Option<String>,
    /// The admin's reference (manual payouts).
    pub reference: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: String,
    pub paid_at: Option<String>,
}

impl From<StoredPayout> for Payout {
    fn from(p: StoredPayout) -> Self {
        Payout {
            method: if p.method == "manual" {
                Method::Manual
            } else {
                Method::StripeConnect
            },
            created_at: rfc3339(p.created_at),
            paid_at: p.paid_at.map(rfc3339),
            id: p.id,
            run_id: p.run_id,
            partner_id: p.partner_id,
            currency: p.currency,
            amount: p.amount,
            commissions_amount: p.commissions_amount,
            clawed_back: p.clawed_back,
            commission_count: p.commission_count,
            status: p.status,
            destination: p.destination,
            transfer_id: p.transfer_id,
            reference: p.reference,
            failure_code: p.failure_code,
            failure_message: p.failure_message,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListPayouts {
    pub partner_id: Option<String>,
    /// `pending`, `paid`, `failed` or `reversed`.
    pub status: Option<String>,
    pub run_id: Option<String>,
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const STATUSES: [&str; 4] = ["pending", "paid", "failed", "reversed"];

/// Whom a read of payouts is for: the partner a partner key is, or any (`payouts:read`).
fn reader(principal: &Principal) -> Result<Option<&str>> {
    match principal.kind {
        KeyKind::Partner => Ok(principal.partner_id.as_deref()),
        _ => principal.require(Scope::PayoutsRead).map(|()| None),
    }
}

/// Payouts, newest first (`payouts:read`; a partner key lists its own).
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts", params(ListPayouts),
    responses((status = 200, body = List<Payout>), AuthProblems, InvalidProblem))]
async fn list_payouts(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListPayouts>,
) -> Result<axum::Json<List<Payout>>> {
    let own = reader(&principal)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    if query
        .status
        .as_deref()
        .is_some_and(|s| !STATUSES.contains(&s))
    {
        return Err(Error::invalid(
            "status",
            "must be pending, paid, failed or reversed",
        ));
    }
    if let (Some(own), Some(asked)) = (own, query.partner_id.as_deref()) {
        if own != asked {
            return Err(Error::Forbidden {
                code: "forbidden_partner",
                detail: "a partner key acts only on its own partner".to_owned(),
            });
        }
    }
    let filter = PayoutFilter {
        partner_id: own.or(query.partner_id.as_deref()).unwrap_or_default(),
        status: query.status.as_deref().unwrap_or_default(),
        run_id: query.run_id.as_deref().unwrap_or_default(),
    };
    let mut tx = state.db.read(&principal.tenant_id).await?;
    let rows = store::list_payouts(&mut tx, &principal.tenant_id, &filter, &page).await?;
    tx.commit().await?;
    let list = page.finish(rows, |p| (p.created_at, &p.id));
    Ok(axum::Json(List {
        data: list.data.into_iter().map(Payout::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct PayoutWithCommissions {
    #[serde(flatten)]
    pub payout: Payout,
    /// The commissions it holds or paid (none once it failed or was reversed: they were freed).
    pub commissions: Vec<Commission>,
}

/// A payout with its commissions (`payouts:read`, or the partner's own key for its own).
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts",
    params(("id" = String, Path, description = "Payout id, `pay_...`")),
    responses((status = 200, body = PayoutWithCommissions), AuthProblems, NotFoundProblem))]
async fn get_payout(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<PayoutWithCommissions>> {
    let own = reader(&principal)?;
    let tenant = &principal.tenant_id;
    let not_found = || Error::NotFound {
        code: "payout_not_found",
        detail: format!("no payout {id}"),
    };
    let mut tx = state.db.read(tenant).await?;
    let payout = store::find_payout(&mut tx, tenant, &id)
        .await?
        .filter(|p| own.is_none_or(|own| own == p.partner_id))
        .ok_or_else(not_found)?;
    let commissions = crate::commissions::store::of_payout(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(axum::Json(PayoutWithCommissions {
        payout: payout.into(),
        commissions: commissions.into_iter().map(Commission::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkPaid {
    /// What the money went out as: a PayPal batch, a bank reference. 1 to 255 characters.
    #[schema(min_length = 1, max_length = 255)]
    pub reference: String,
}

/// Mark a manual payout paid (admin): it and its commissions become `paid` and `payout.paid`
/// is announced. Marking it again with any reference answers it as it is.
#[utoipa::path(post, path = "/v1/payouts/{id}/mark-paid", tag = "payouts",
    params(("id" = String, Path, description = "Payout id, `pay_...`")),
    request_body = MarkPaid,
    responses(
        (status = 200, body = Payout),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`payout_not_manual` (Stripe Connect payouts are paid by their \
                transfer) or `payout_not_pending` (it failed or was reversed)"),
        AuthProblems, NotFoundProblem, InvalidProblem))]
async fn mark_paid(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<MarkPaid>,
) -> Result<axum::Json<Payout>> {
    principal.require_admin()?;
    let reference = body.reference.trim().to_owned();
    if reference.is_empty() || reference.chars().count() > 255 {
        return Err(Error::invalid("reference", "must be 1 to 255 characters"));
    }
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let payout = store::find_payout(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    let payout = payout.ok_or_else(|| Error::NotFound {
        code: "payout_not_found",
        detail: format!("no payout {id}"),
    })?;
    if payout.method != Method::Manual.as_str() {
        return Err(Error::Conflict {
            code: "payout_not_manual",
            detail: "a Stripe Connect payout is paid by its transfer".to_owned(),
        });
    }
    let paid = super::paid(&state, tenant, &id, Settled::Reference(reference))
        .await?
        .ok_or_else(|| Error::not_found("payout"))?;
    if paid.status != "paid" {
        return Err(Error::Conflict {
            code: "payout_not_pending",
            detail: format!("the payout is {}", paid.status),
        });
    }
    Ok(axum::Json(paid.into()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The run to export; default: every pending manual payout.
    pub run_id: Option<String>,
}

/// Payouts as CSV, for paying them outside Switchyard (`payouts:read`; not for partner keys):
/// one row per payout with the partner's name and e-mail, the amount in major and minor
/// units, and the status. Cells that a spreadsheet would run as a formula are quoted with a
/// leading `'`.
#[utoipa::path(get, path = "/v1/payouts/export.csv", tag = "payouts", params(ExportQuery),
    responses(
        (status = 200, description = "The payouts", content_type = "text/csv", body = String),
        AuthProblems, NotFoundProblem))]
async fn export_csv(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ExportQuery>,
) -> Result<Response> {
    principal.require(Scope::PayoutsRead)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let payouts = match query.run_id.as_deref() {
        Some(run) => {
            store::find_run(&mut tx, tenant, run)
                .await?
                .ok_or_else(|| Error::NotFound {
                    code: "payout_run_not_found",
                    detail: format!("no payout run {run}"),
                })?;
            store::payouts_of_run(&mut tx, tenant, run).await?
        }
        None => store::pending_manual_payouts(&mut tx, tenant).await?,
    };
    let mut csv = String::from(
        "payout_id,run_id,partner_id,partner_name,partner_email,amount,amount_minor,currency,\
         method,status,reference,created_at\r\n",
    );
    for p in payouts {
        let partner = crate::partners::store::find(&mut tx, tenant, &p.partner_id).await?;
        let (name, email) = partner.map(|p| (p.name, p.email)).unwrap_or_default();
        let cells = [
            p.id.clone(),
            p.run_id.clone(),
            p.partner_id.clone(),
            name,
            email,
            crate::postbacks::major_units(p.amount, &p.currency),
            p.amount.to_string(),
            p.currency.clone(),
            p.method.clone(),
            p.status.clone(),
            p.reference.clone().unwrap_or_default(),
            rfc3339(p.created_at),
        ];
        let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        csv.push_str(&row.join(","));
        csv.push_str("\r\n");
    }
    tx.commit().await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"payouts.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

/// One RFC 4180 cell: quoted when it holds a comma, quote or line break; a leading `= + - @`
/// (or tab, carriage return) is prefixed with `'`, so a spreadsheet shows it as text.
fn csv_cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

// --- balances --------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct Balance {
    pub partner_id: String,
    /// One entry per currency the partner earned in.
    pub currencies: Vec<CurrencyBalance>,
}

/// A partner's balance per currency: pending, approved, in payouts, carried, paid and clawed
/// back (`payouts:read`, or the partner's own key).
#[utoipa::path(get, path = "/v1/partners/{id}/balance", tag = "payouts",
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses((status = 200, body = Balance), AuthProblems, NotFoundProblem))]
async fn partner_balance(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Balance>> {
    authorize(&principal, Some(Scope::PayoutsRead), true, &id)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    partners::existing(&mut tx, tenant, &id).await?;
    let currencies = super::balance(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(axum::Json(Balance {
        partner_id: id,
        currencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("Ada"), "Ada");
        assert_eq!(csv_cell("Lovelace, Ada"), "\"Lovelace, Ada\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("-12"), "'-12");
    }
}
