//! `/v1/whoami` and `/v1/api-keys`: who am I, and minting, listing and revoking keys (admin).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Problem, Result,
};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};

use super::{ApiKey, IssuedKey, KeyError, KeyKind, NewKey, Principal, Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

/// The caller as the API sees it.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub tenant_id: String,
    pub tenant_slug: String,
    pub key_id: String,
    pub kind: KeyKind,
    pub scopes: Vec<Scope>,
    pub partner_id: Option<String>,
}

/// Who am I: the tenant, key, kind and scopes behind the presented key. Any valid key.
#[utoipa::path(get, path = "/v1/whoami", tag = "keys",
    responses(
        (status = 200, body = WhoAmI),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
async fn whoami(principal: Principal) -> axum::Json<WhoAmI> {
    let scopes = if principal.kind == KeyKind::Admin {
        Scope::ALL.to_vec()
    } else {
        principal.scopes
    };
    axum::Json(WhoAmI {
        tenant_id: principal.tenant_id,
        tenant_slug: principal.tenant_slug,
        key_id: principal.key_id,
        kind: principal.kind,
        scopes,
        partner_id: principal.partner_id,
    })
}

/// A key to mint.
#[derive(Deserialize, ToSchema)]
pub struct CreateKey {
    /// What the key is for, e.g. "Zapier" or "HubSpot sync".
    pub name: String,
    /// `admin`, `scoped` (default) or `partner`.
    #[schema(value_type = Option<KeyKind>)]
    pub kind: Option<String>,
    /// For scoped keys: the scopes it holds.
    #[serde(default)]
    #[schema(value_type = Vec<Scope>)]
    pub scopes: Vec<String>,
    /// For partner keys: the partner it acts as.
    pub partner_id: Option<String>,
}

/// Mint an API key (admin). The plaintext key is in the response once and never again.
#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = CreateKey,
    responses(
        (status = 201, body = IssuedKey),
        AuthProblems,
        InvalidProblem,
    ))]
async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateKey>,
) -> Result<impl IntoResponse> {
    principal.require_admin()?;
    let new = validate(body)?;
    let mut tx = state.db.write(&principal.tenant_id).await?;
    let issued = super::issue(&mut tx, &state.clock, &principal.tenant_id, new)
        .await
        .map_err(|e| match e {
            KeyError::Invalid { field, message } => Error::invalid(field, message),
            KeyError::Database(e) => e.into(),
        })?;
    tx.commit().await?;
    tracing::info!(key_id = %issued.key.id, kind = issued.key.kind.as_str(), "api key created");
    Ok((StatusCode::CREATED, axum::Json(issued)))
}

fn validate(body: CreateKey) -> Result<NewKey> {
    let mut errors = Vec::new();
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    let kind = match body.kind.as_deref() {
        None => Some(KeyKind::Scoped),
        Some(kind) => KeyKind::parse(kind),
    };
    if kind.is_none() {
        errors.push(FieldError::new(
            "kind",
            "must be one of admin, scoped, partner",
        ));
    }
    let mut scopes = Vec::new();
    for scope in &body.scopes {
        match Scope::parse(scope) {
            Some(s) => scopes.push(s),
            None => errors.push(FieldError::new(
                "scopes",
                format!(
                    "unknown scope {scope:?}; valid scopes: {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                ),
            )),
        }
    }
    match kind {
        Some(kind) if errors.is_empty() => Ok(NewKey {
            name,
            kind,
            scopes,
            partner_id: body.partner_id,
        }),
        _ => Err(Error::Validation(errors)),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeys {
    /// Only keys holding this scope (admin keys hold all).
    #[param(value_type = Option<Scope>)]
    pub scope: Option<String>,
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List the tenant's API keys, newest first (admin). Secrets are never shown.
#[utoipa::path(get, path = "/v1/api-keys", tag = "keys", params(ListKeys),
    responses(
        (status = 200, body = List<ApiKey>),
        AuthProblems,
        InvalidProblem,
    ))]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListKeys>,
) -> Result<axum::Json<List<ApiKey>>> {
    principal.require_admin()?;
    let scope = match query.scope.as_deref() {
        None => None,
        Some(s) => Some(Scope::parse(s).ok_or_else(|| Error::invalid("scope", "unknown scope"))?),
    };
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let mut tx = state.db.read(&principal.tenant_id).await?;
    let rows = super::list(&mut tx, &principal.tenant_id, scope, &page).await?;
    tx.commit().await?;
    let list = page.finish(rows, |k| (k.created_at, &k.id));
    Ok(axum::Json(List {
        data: list.data.into_iter().map(ApiKey::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

/// Revoke an API key (admin). Effective immediately, on every node. The tenant's last active
/// admin key cannot be revoked (mint another first; `switchyard keys` is the recovery path).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id, `key_...`")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`cannot_revoke_last_admin_key`"),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    principal.require_admin()?;
    let mut tx = state.db.write(&principal.tenant_id).await?;
    // The last active admin key stays: without it nobody could administer the tenant over the
    // API (the CLI, `switchyard keys create`, is the recovery path).
    let admins = super::lock_active_admins(&mut tx, &principal.tenant_id).await?;
    if admins == [id.clone()] {
        return Err(Error::Conflict {
            code: "cannot_revoke_last_admin_key",
            detail: "this is the tenant's last active admin key: mint another first".to_owned(),
        });
    }
    let found = super::revoke(&mut tx, &principal.tenant_id, &id, state.clock.now_ms()).await?;
    tx.commit().await?;
    if !found {
        return Err(Error::not_found("API key"));
    }
    tracing::info!(key_id = %id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
