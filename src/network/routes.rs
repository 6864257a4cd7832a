//! `/v1/network` (admin): connect to the partner Network, its state, auto-enrollment,
//! disconnect, backfill, and the Network's offerings and requests, proxied with the vendor token.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::config::Tenancy;
use crate::http::error::{AuthProblems, Error, FieldError, InvalidProblem, Problem, Result};
use crate::http::extract::{Json, Path, Query};
use crate::keys::{self, KeyKind, NewKey, Principal, Scope};

use super::store::{self, StoredConnection};
use super::{client, Backfilled, Connected};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_network, update_network, disconnect))
        .routes(routes!(connect))
        .routes(routes!(complete))
        .routes(routes!(backfill))
        .routes(routes!(list_offerings, create_offering))
        .routes(routes!(update_offering, delete_offering))
        .routes(routes!(list_requests))
        .routes(routes!(approve_request))
        .routes(routes!(reject_request))
}

#[derive(Serialize, ToSchema)]
pub struct NetworkStatus {
    /// `none`, `pending` (signed up, waiting for the one-time token) or `connected`.
    pub status: String,
    pub network_url: Option<String>,
    pub vendor_id: Option<String>,
    /// Whether new partners are sent to the Network (revocations always are).
    pub auto_enroll: bool,
    /// The scoped key the Network calls this instance with (its id; the key was sent once).
    pub federation_key_id: Option<String>,
    /// Partner upserts waiting to be sent (due or retrying).
    pub outbox_depth: i64,
    /// Upserts that ran out of retries: replay them from `/v1/queue`.
    pub outbox_dead: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// What the payouts report has covered up to.
    pub payouts_reported_until: Option<String>,
}

async fn status_of(state: &AppState, tenant_id: &str) -> Result<NetworkStatus> {
    let mut tx = state.db.read(tenant_id).await?;
    let connection = store::find(&mut tx, tenant_id).await?;
    tx.commit().await?;
    let (depth, dead) = super::outbox_depth(state, tenant_id).await?;
    Ok(match connection {
        None => NetworkStatus {
            status: "none".to_owned(),
            network_url: None,
            vendor_id: None,
            auto_enroll: false,
            federation_key_id: None,
            outbox_depth: depth,
            outbox_dead: dead,
            last_error: None,
            last_error_at: None,
            payouts_reported_until: None,
        },
        Some(c) => NetworkStatus {
            status: c.status,
            network_url: Some(c.network_url),
            vendor_id: c.vendor_id,
            auto_enroll: c.auto_enroll == 1,
            federation_key_id: Some(c.federation_key_id),
            outbox_depth: depth,
            outbox_dead: dead,
            last_error: c.last_error,
            last_error_at: c.last_error_at.map(rfc3339),
            payouts_reported_until: Some(rfc3339(c.payouts_reported_until)),
        },
    })
}

/// The Network connection (admin): its state, the outbox and the last error; never the token.
#[utoipa::path(get, path = "/v1/network", tag = "network",
    responses((status = 200, body = NetworkStatus), AuthProblems))]
async fn get_network(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<NetworkStatus>> {
    principal.require_admin()?;
    Ok(axum::Json(status_of(&state, &principal.tenant_id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// The Network's API base, an http(s) URL.
    #[schema(max_length = 2048)]
    pub network_url: String,
    /// Where the Network sends the one-time token.
    pub contact_email: String,
    /// The program's name on the Network, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub display_name: String,
    /// Send new partners to the Network (default true).
    pub auto_enroll: Option<bool>,
}

/// Connect to the Network (admin): mints the scoped federation key (`partners:read`,
/// `partners:write`), signs up with the Network with this instance's URL and that key, and
/// waits for the one-time token the Network mails to `contact_email`. Connecting again while
/// pending starts over (the previous federation key is revoked).
#[utoipa::path(post, path = "/v1/network/connect", tag = "network", request_body = Connect,
    responses(
        (status = 202, body = NetworkStatus, description = "Signed up; complete with the token"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`network_already_connected`: disconnect first"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "`network_unreachable`"),
        (status = 502, body = Problem, content_type = "application/problem+json",
            description = "`network_error`: the Network refused (its status when 4xx)"),
        AuthProblems, InvalidProblem))]
async fn connect(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<Connect>,
) -> Result<(StatusCode, axum::Json<NetworkStatus>)> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let url = body.network_url.trim().trim_end_matches('/').to_owned();
    // The federation key and the vendor token travel over it: https, or plain http to a
    // loopback stand-in.
    let secure = url::Url::parse(&url).is_ok_and(|u| {
        let loopback = u.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        u.scheme() == "https" || (u.scheme() == "http" && loopback)
    });
    if url.len() > 2048 || !secure {
        errors.push(FieldError::new(
            "network_url",
            "must be an absolute https URL (plain http only to a loopback address)",
        ));
    }
    let email = crate::identities::normalize_email(&body.contact_email).unwrap_or_else(|| {
        errors.push(FieldError::new("contact_email", "is not an e-mail address"));
        String::new()
    });
    let name = body.display_name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new(
            "display_name",
            "must be 1 to 200 characters",
        ));
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let tenant = &principal.tenant_id;
    let now = state.clock.now_ms();
    let mut tx = state.db.write(tenant).await?;
    let previous = store::lock(&mut tx, tenant).await?;
    match &previous {
        Some(c) if c.status == "connected" => {
            return Err(Error::Conflict {
                code: "network_already_connected",
                detail: "this program is connected to a Network: disconnect first".to_owned(),
            })
        }
        Some(c) => {
            keys::revoke(&mut tx, tenant, &c.federation_key_id, now).await?;
        }
        None => {}
    }
    let key = keys::issue(
        &mut tx,
        &state.clock,
        tenant,
        NewKey {
            name: "Partner Network (federation)".to_owned(),
            kind: KeyKind::Scoped,
            scopes: vec![Scope::PartnersRead, Scope::PartnersWrite],
            partner_id: None,
        },
    )
    .await
    .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
    let connection = StoredConnection {
        tenant_id: tenant.clone(),
        network_url: url.clone(),
        contact_email: email.clone(),
        display_name: name.clone(),
        status: "pending".to_owned(),
        signup_id: None,
        vendor_id: None,
        vendor_token_sealed: None,
        federation_key_id: key.key.id.clone(),
        auto_enroll: i64::from(body.auto_enroll.unwrap_or(true)),
        last_error: None,
        last_error_at: None,
        payouts_reported_until: now,
        payouts_pending_until: None,
        created_at: previous.as_ref().map_or(now, |c| c.created_at),
        updated_at: now,
    };
    store::save(&mut tx, &connection).await?;
    tx.commit().await?;

    let instance_url = match state.config.tenancy {
        Tenancy::Multi => format!("{}/t/{}", state.config.public_url(), principal.tenant_slug),
        Tenancy::Single => state.config.public_url(),
    };
    let signup = json!({"instance_url": instance_url, "api_key": key.plaintext,
                        "contact_email": email, "display_name": name});
    let answer = client::call(
        &state.outbound,
        reqwest::Method::POST,
        &url,
        "/vendors/signup",
        None,
        Some(&signup),
    )
    .await;
    let mut tx = state.db.write(tenant).await?;
    match answer {
        Ok(answer) => {
            let signup = answer["signup_id"].as_str();
            let recorded =
                store::set_signup(&mut tx, tenant, &key.key.id, signup, state.clock.now_ms())
                    .await?;
            tx.commit().await?;
            if !recorded {
                return Err(Error::Conflict {
                    code: "network_connection_changed",
                    detail: "another connect or a disconnect happened meanwhile".to_owned(),
                });
            }
        }
        Err(err) => {
            // The key may have reached the Network: it must not outlive the failed signup.
            keys::revoke(&mut tx, tenant, &key.key.id, state.clock.now_ms()).await?;
            store::set_error(&mut tx, tenant, Some(&format!("signup: {err}")), now).await?;
            tx.commit().await?;
            return Err(super::problem(err));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(status_of(&state, tenant).await?),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    /// The one-time token the Network mailed to the contact address.
    #[schema(min_length = 1, max_length = 512)]
    pub token: String,
}

/// Complete the connection (admin) with the Network's one-time token: it is exchanged for the
/// vendor token, stored encrypted and never shown.
#[utoipa::path(post, path = "/v1/network/connect/complete", tag = "network",
    request_body = Complete,
    responses(
        (status = 200, body = NetworkStatus),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`network_not_pending`: connect first (or it is connected already)"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "`network_unreachable`"),
        (status = 502, body = Problem, content_type = "application/problem+json",
            description = "`network_error`: the Network refused the token (its status when 4xx)"),
        AuthProblems, InvalidProblem))]
async fn complete(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<Complete>,
) -> Result<axum::Json<NetworkStatus>> {
    principal.require_admin()?;
    let token = body.token.trim().to_owned();
    if token.is_empty() || token.len() > 512 {
        return Err(Error::invalid("token", "must be 1 to 512 characters"));
    }
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let connection = store::find(&mut tx, tenant).await?;
    tx.commit().await?;
    let Some(connection) = connection.filter(|c| c.status == "pending") else {
        return Err(Error::Conflict {
            code: "network_not_pending",
            detail: "no Network signup waits for a token: connect first".to_owned(),
        });
    };
    let exchange = json!({"token": token, "signup_id": connection.signup_id});
    let answer = client::call(
        &state.outbound,
        reqwest::Method::POST,
        &connection.network_url,
        "/vendors/verify-and-issue-token",
        None,
        Some(&exchange),
    )
    .await
    .map_err(super::problem)?;
    let (Some(vendor_id), Some(vendor_token)) = (
        answer["vendor_id"].as_str(),
        answer["vendor_token"].as_str(),
    ) else {
        return Err(Error::Upstream {
            code: "network_error",
            detail: "the Network's answer has no vendor id and token".to_owned(),
        });
    };
    let sealed = state.secrets.seal(vendor_token);
    let mut tx = state.db.write(tenant).await?;
    let key = &connection.federation_key_id;
    let now = state.clock.now_ms();
    let completed = store::complete(&mut tx, tenant, key, vendor_id, &sealed, now).await?;
    tx.commit().await?;
    if !completed {
        return Err(Error::Conflict {
            code: "network_not_pending",
            detail: "the connection changed meanwhile (a disconnect or another connect)".to_owned(),
        });
    }
    Ok(axum::Json(status_of(&state, tenant).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNetwork {
    pub auto_enroll: bool,
}

/// Turn auto-enrollment of new partners on or off (admin).
#[utoipa::path(patch, path = "/v1/network", tag = "network", request_body = UpdateNetwork,
    responses((status = 200, body = NetworkStatus), AuthProblems, InvalidProblem,
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "`network_not_connected`: no Network connection")))]
async fn update_network(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<UpdateNetwork>,
) -> Result<axum::Json<NetworkStatus>> {
    principal.require_admin()?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let now = state.clock.now_ms();
    if !store::set_auto_enroll(&mut tx, tenant, body.auto_enroll, now).await? {
        return Err(not_connected());
    }
    tx.commit().await?;
    Ok(axum::Json(status_of(&state, tenant).await?))
}

fn not_connected() -> Error {
    Error::NotFound {
        code: "network_not_connected",
        detail: "this program is not connected to a Network".to_owned(),
    }
}

/// Disconnect from the Network (admin): the federation key is revoked at once, the vendor
/// token forgotten; queued upserts are dropped when they run.
#[utoipa::path(delete, path = "/v1/network", tag = "network",
    responses((status = 204, description = "Disconnected"), AuthProblems,
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "`network_not_connected`: no Network connection")))]
async fn disconnect(State(state): State<AppState>, principal: Principal) -> Result<StatusCode> {
    principal.require_admin()?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let connection = store::lock(&mut tx, tenant)
        .await?
        .ok_or_else(not_connected)?;
    keys::revoke(
        &mut tx,
        tenant,
        &connection.federation_key_id,
        state.clock.now_ms(),
    )
    .await?;
    store::delete(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The connected Network with its token, or 409 `network_not_connected`.
async fn connected(state: &AppState, tenant_id: &str) -> Result<Connected> {
    let mut tx = state.db.read(tenant_id).await?;
    let connected = super::connected(state, &mut tx, tenant_id).await?;
    tx.commit().await?;
    connected.ok_or_else(|| Error::Conflict {
        code: "network_not_connected",
        detail: "this program is not connected to a Network".to_owned(),
    })
}

/// Send every partner to the Network (admin), in batches of 100; safe to run twice. Answers
/// how many the Network now knows because of it, knew already, and refused or could not get.
#[utoipa::path(post, path = "/v1/network/backfill", tag = "network",
    responses((status = 200, body = Backfilled), AuthProblems,
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`network_not_connected`")))]
async fn backfill(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Backfilled>> {
    principal.require_admin()?;
    let connected = connected(&state, &principal.tenant_id).await?;
    Ok(axum::Json(super::backfill(&state, &connected).await?))
}

/// The answers a proxied call gives besides the Network's own.
#[derive(utoipa::IntoResponses)]
pub enum ProxyProblems {
    #[response(
        status = 409,
        description = "`network_not_connected`",
        content_type = "application/problem+json"
    )]
    NotConnected(Problem),
    #[response(
        status = 503,
        description = "`network_unreachable`",
        content_type = "application/problem+json"
    )]
    Unreachable(Problem),
    #[response(
        status = 502,
        description = "`network_error` (the Network's status when 4xx)",
        content_type = "application/problem+json"
    )]
    NetworkError(Problem),
}

/// A proxied call to the Network with the vendor token (admin).
async fn proxy(
    state: &AppState,
    principal: &Principal,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<axum::Json<Value>> {
    principal.require_admin()?;
    let connected = connected(state, &principal.tenant_id).await?;
    let answer = super::call(state, &connected, method, path, body)
        .await
        .map_err(super::problem)?;
    Ok(axum::Json(answer))
}

/// An id as a path segment of the Network's API: percent-encoded, and never `.` or `..`
/// (which would name another route).
fn segment(id: &str) -> Result<String> {
    if id.is_empty() || id == "." || id == ".." || id.len() > 255 {
        return Err(Error::invalid("id", "is not an id of the Network"));
    }
    Ok(url::form_urlencoded::byte_serialize(id.as_bytes()).collect())
}

/// The program's offerings on the Network (admin; proxied).
#[utoipa::path(get, path = "/v1/network/offerings", tag = "network",
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems))]
async fn list_offerings(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Value>> {
    proxy(
        &state,
        &principal,
        reqwest::Method::GET,
        "/vendors/me/offerings",
        None,
    )
    .await
}

/// Create an offering on the Network (admin; proxied as given).
#[utoipa::path(post, path = "/v1/network/offerings", tag = "network",
    request_body(content = Value, description = "An offering, as the Network takes it"),
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems,
        InvalidProblem))]
async fn create_offering(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<Value>,
) -> Result<axum::Json<Value>> {
    let path = "/vendors/me/offerings";
    proxy(&state, &principal, reqwest::Method::POST, path, Some(&body)).await
}

/// Change an offering on the Network (admin; proxied as given).
#[utoipa::path(patch, path = "/v1/network/offerings/{id}", tag = "network",
    params(("id" = String, Path, description = "The Network's offering id")),
    request_body(content = Value, description = "The fields to change"),
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems,
        InvalidProblem))]
async fn update_offering(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<axum::Json<Value>> {
    let path = format!("/vendors/me/offerings/{}", segment(&id)?);
    proxy(
        &state,
        &principal,
        reqwest::Method::PATCH,
        &path,
        Some(&body),
    )
    .await
}

/// Withdraw an offering from the Network (admin; proxied).
#[utoipa::path(delete, path = "/v1/network/offerings/{id}", tag = "network",
    params(("id" = String, Path, description = "The Network's offering id")),
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems))]
async fn delete_offering(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>> {
    let path = format!("/vendors/me/offerings/{}", segment(&id)?);
    proxy(&state, &principal, reqwest::Method::DELETE, &path, None).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRequests {
    /// `pending`, `approved` or `rejected`; default all.
    pub status: Option<String>,
}

/// Creators' requests to join the program (admin; proxied).
#[utoipa::path(get, path = "/v1/network/requests", tag = "network", params(ListRequests),
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems,
        InvalidProblem))]
async fn list_requests(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListRequests>,
) -> Result<axum::Json<Value>> {
    let path = match query.status.as_deref() {
        None => "/vendors/me/requests".to_owned(),
        Some(status @ ("pending" | "approved" | "rejected")) => {
            format!("/vendors/me/requests?status={status}")
        }
        Some(_) => {
            return Err(Error::invalid(
                "status",
                "must be pending, approved or rejected",
            ))
        }
    };
    proxy(&state, &principal, reqwest::Method::GET, &path, None).await
}

/// Approve a creator's request (admin; proxied): the Network then creates the partner here
/// with the federation key.
#[utoipa::path(post, path = "/v1/network/requests/{id}/approve", tag = "network",
    params(("id" = String, Path, description = "The Network's request id")),
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems))]
async fn approve_request(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>> {
    let path = format!("/vendors/me/requests/{}/approve", segment(&id)?);
    proxy(
        &state,
        &principal,
        reqwest::Method::POST,
        &path,
        Some(&json!({})),
    )
    .await
}

/// Reject a creator's request (admin; proxied).
#[utoipa::path(post, path = "/v1/network/requests/{id}/reject", tag = "network",
    params(("id" = String, Path, description = "The Network's request id")),
    responses((status = 200, body = Value, description = "The Network's answer"), AuthProblems,
        ProxyProblems))]
async fn reject_request(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>> {
    let path = format!("/vendors/me/requests/{}/reject", segment(&id)?);
    proxy(
        &state,
        &principal,
        reqwest::Method::POST,
        &path,
        Some(&json!({})),
    )
    .await
}
