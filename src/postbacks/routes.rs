//! `/v1/partners/{id}/postbacks`: a partner's tracker URL templates (admin, a key with
//! `postbacks:write`, or the partner's own key).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Result,
};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};
use crate::http::validate::{check_url, validated};
use crate::ids;
use crate::keys::{Principal, Scope};
use crate::partners::{self, authorize};

use super::store::{self, StoredPostback};
use super::{render, TYPES};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_postback, list_postbacks))
        .routes(routes!(update_postback, delete_postback))
}

#[derive(Serialize, ToSchema)]
pub struct Postback {
    pub id: String,
    pub partner_id: String,
    /// The GET URL with `{macros}`.
    pub url_template: String,
    /// Types it fires on; empty means every `commission.*` type (`payout.paid` only when named).
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled (after consecutive failures).
    pub disabled_reason: Option<String>,
    pub success_count: i64,
    pub failure_count: i64,
    pub consecutive_failures: i64,
    pub last_status: Option<i64>,
    pub last_fired_at: Option<String>,
    pub created_at: String,
}

impl From<StoredPostback> for Postback {
    fn from(p: StoredPostback) -> Self {
        Postback {
            event_types: p
                .event_types
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            enabled: p.enabled == 1,
            last_fired_at: p.last_fired_at.map(rfc3339),
            created_at: rfc3339(p.created_at),
            id: p.id,
            partner_id: p.partner_id,
            url_template: p.url_template,
            disabled_reason: p.disabled_reason,
            success_count: p.success_count,
            failure_count: p.failure_count,
            consecutive_failures: p.consecutive_failures,
            last_status: p.last_status,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreatePostback {
    /// An http(s) URL; macros such as `{click_id}` and `{commission_amount}` are filled in.
    pub url_template: String,
    /// `commission.accrued`, `commission.approved`, `commission.reversed`, `payout.paid`; omit
    /// for every `commission.*` type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdatePostback {
    pub url_template: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Enabling a disabled postback clears its failure streak.
    pub enabled: Option<bool>,
}

/// Checks a template: with every macro filled in, it must be an absolute http(s) URL.
fn check_template(template: &str, errors: &mut Vec<FieldError>) {
    let sample: Vec<(&str, String)> = super::macros("commission.accrued", &serde_json::json!({}))
        .into_iter()
        .map(|(name, _)| (name, "x".to_owned()))
        .collect();
    let mut rendered = Vec::new();
    check_url("url_template", &render(template, &sample), &mut rendered);
    errors.extend(rendered);
}

fn check_types(types: &[String], errors: &mut Vec<FieldError>) -> String {
    for name in types.iter().filter(|t| !TYPES.contains(&t.as_str())) {
        errors.push(FieldError::new(
            "event_types",
            format!("{name:?} is not one of {}", TYPES.join(", ")),
        ));
    }
    let mut unique: Vec<&str> = types.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    unique.join(" ")
}

/// Add a postback to a partner.
#[utoipa::path(post, path = "/v1/partners/{id}/postbacks", tag = "postbacks",
    request_body = CreatePostback,
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 201, body = Postback),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn create_postback(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<CreatePostback>,
) -> Result<(StatusCode, axum::Json<Postback>)> {
    authorize(&principal, Some(Scope::PostbacksWrite), true, &id)?;
    let mut errors = Vec::new();
    check_template(&body.url_template, &mut errors);
    let event_types = check_types(&body.event_types, &mut errors);
    validated(errors)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    partners::existing(&mut tx, tenant, &id).await?;
    let now = state.clock.now_ms();
    let postback = StoredPostback {
        id: ids::new("pbk"),
        tenant_id: tenant.clone(),
        partner_id: id,
        url_template: body.url_template,
        event_types,
        enabled: body.enabled.unwrap_or(true).into(),
        disabled_reason: None,
        success_count: 0,
        failure_count: 0,
        consecutive_failures: 0,
        last_status: None,
        last_fired_at: None,
        created_at: now,
        updated_at: now,
    };
    store::insert(&mut tx, &postback).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(postback.into())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListPostbacks {
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A partner's postbacks with their counters, newest first.
#[utoipa::path(get, path = "/v1/partners/{id}/postbacks", tag = "postbacks",
    params(("id" = String, Path, description = "Partner id, `ptr_...`"), ListPostbacks),
    responses(
        (status = 200, body = List<Postback>),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn list_postbacks(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ListPostbacks>,
) -> Result<axum::Json<List<Postback>>> {
    authorize(&principal, Some(Scope::PostbacksWrite), true, &id)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    partners::existing(&mut tx, tenant, &id).await?;
    let rows = store::list(&mut tx, tenant, &id, &page).await?;
    tx.commit().await?;
    let list = page.finish(rows, |p| (p.created_at, &p.id));
    Ok(axum::Json(List {
        data: list.data.into_iter().map(Postback::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

async fn load(
    state: &AppState,
    principal: &Principal,
    partner_id: &str,
    id: &str,
) -> Result<(crate::db::Tx, StoredPostback)> {
    authorize(principal, Some(Scope::PostbacksWrite), true, partner_id)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let postback = store::find(&mut tx, tenant, partner_id, id)
        .await?
        .ok_or_else(|| Error::NotFound {
            code: "postback_not_found",
            detail: format!("partner {partner_id} has no postback {id}"),
        })?;
    Ok((tx, postback))
}

/// Change a postback's template, types or enabled flag.
#[utoipa::path(patch, path = "/v1/partners/{id}/postbacks/{postback_id}", tag = "postbacks",
    request_body = UpdatePostback,
    params(
        ("id" = String, Path, description = "Partner id, `ptr_...`"),
        ("postback_id" = String, Path, description = "Postback id, `pbk_...`"),
    ),
    responses(
        (status = 200, body = Postback),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn update_postback(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, postback_id)): Path<(String, String)>,
    Json(body): Json<UpdatePostback>,
) -> Result<axum::Json<Postback>> {
    let mut errors = Vec::new();
    if let Some(template) = &body.url_template {
        check_template(template, &mut errors);
    }
    let event_types = body
        .event_types
        .as_ref()
        .map(|types| check_types(types, &mut errors));
    validated(errors)?;
    let (mut tx, mut postback) = load(&state, &principal, &id, &postback_id).await?;
    if let Some(template) = body.url_template {
        postback.url_template = template;
    }
    if let Some(types) = event_types {
        postback.event_types = types;
    }
    if let Some(enabled) = body.enabled {
        if enabled && postback.enabled == 0 {
            postback.disabled_reason = None;
            postback.consecutive_failures = 0;
        }
        postback.enabled = enabled.into();
    }
    postback.updated_at = state.clock.now_ms();
    store::update(&mut tx, &postback).await?;
    tx.commit().await?;
    Ok(axum::Json(postback.into()))
}

/// Remove a postback: it fires no more (its history is kept).
#[utoipa::path(delete, path = "/v1/partners/{id}/postbacks/{postback_id}", tag = "postbacks",
    params(
        ("id" = String, Path, description = "Partner id, `ptr_...`"),
        ("postback_id" = String, Path, description = "Postback id, `pbk_...`"),
    ),
    responses(
        (status = 204, description = "Removed"),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn delete_postback(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, postback_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let (mut tx, postback) = load(&state, &principal, &id, &postback_id).await?;
    store::delete(
        &mut tx,
        &principal.tenant_id,
        &postback.id,
        state.clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
