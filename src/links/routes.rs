//! `/v1/partners/{id}/links` (admin or the partner's own key) and the click router `/r/{key}`.

use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::campaigns;
use crate::clock::rfc3339;
use crate::config::Tenancy;
use crate::http::error::{AuthProblems, Error, InvalidProblem, NotFoundProblem, Result};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};
use crate::ids;
use crate::keys::{KeyKind, Principal, Scope};
use crate::partners::{self, authorize};

use super::store::{self, StoredLink};
use super::{deep_link, with_click_id, Click};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_link, list_links))
        .routes(routes!(follow))
}

/// Length of a generated link key: 16 letters and digits, about 95 random bits.
const GENERATED_KEY_LEN: usize = 16;

#[derive(Serialize, ToSchema)]
pub struct Link {
    pub id: String,
    pub key: String,
    /// The share URL: `{public URL}/r/{key}`.
    pub url: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub created_at: String,
}

impl Link {
    fn new(link: StoredLink, public_url: &str) -> Self {
        Link {
            url: format!("{}/r/{}", public_url.trim_end_matches('/'), link.link_key),
            key: link.link_key,
            created_at: rfc3339(link.created_at),
            id: link.id,
            partner_id: link.partner_id,
            campaign_id: link.campaign_id,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateLink {
    pub campaign_id: String,
    /// 3 to 64 characters of letters, digits, `_` and `-`, unique across the hub; omit for a
    /// generated, unguessable key. Single-tenant mode only: `/r/{key}` names no tenant, so in
    /// multi-tenant mode a chosen key would tell one tenant which keys another has and let it
    /// squat names; there every key is generated.
    #[schema(min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub key: Option<String>,
}

fn valid_key(key: &str) -> bool {
    (3..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Create a share link (admin, the partner's own key, or the partner Network's federation key).
/// The partner joins the campaign with its first link, with the campaign's terms as they are
/// now.
#[utoipa::path(post, path = "/v1/partners/{id}/links", tag = "links", request_body = CreateLink,
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 201, body = Link),
        (status = 409, body = crate::http::error::Problem, content_type = "application/problem+json",
            description = "`link_key_taken`, `partner_revoked` or `campaign_ended`"),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn create_link(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<CreateLink>,
) -> Result<(StatusCode, axum::Json<Link>)> {
    let tenant = &principal.tenant_id;
    // The partner Network's federation key makes links for the partners it brings.
    let federation = principal.kind == KeyKind::Scoped && {
        let mut tx = state.db.read(tenant).await?;
        let is = crate::network::is_federation_key(&mut tx, tenant, &principal.key_id).await?;
        tx.commit().await?;
        is
    };
    if !federation {
        authorize(&principal, None, true, &id)?;
    }
    if body.key.is_some() && state.config.tenancy == Tenancy::Multi {
        return Err(Error::invalid(
            "key",
            "chosen link keys are for single-tenant installs: omit it for a generated key",
        ));
    }
    if body.key.as_deref().is_some_and(|k| !valid_key(k)) {
        return Err(Error::invalid(
            "key",
            "must be 3 to 64 characters of letters, digits, '_' and '-'",
        ));
    }
    let mut tx = state.db.write(tenant).await?;
    let partner = partners::existing(&mut tx, tenant, &id).await?;
    if partner.status == "revoked" {
        return Err(Error::Conflict {
            code: "partner_revoked",
            detail: format!("partner {id} is revoked"),
        });
    }
    let campaign = campaigns::routes::existing(&mut tx, tenant, &body.campaign_id).await?;
    let now = state.clock.now_ms();
    if campaign.ended(now) {
        return Err(Error::Conflict {
            code: "campaign_ended",
            detail: format!("campaign {} has ended", campaign.id),
        });
    }
    campaigns::store::join(&mut tx, &campaign, &partner.id, &ids::new("pts"), now).await?;
    let link = StoredLink {
        id: ids::new("lnk"),
        tenant_id: tenant.clone(),
        partner_id: partner.id,
        campaign_id: campaign.id,
        link_key: body
            .key
            .unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::rng(), GENERATED_KEY_LEN)),
        created_at: now,
    };
    if !store::insert(&mut tx, &link).await? {
        return Err(Error::Conflict {
            code: "link_key_taken",
            detail: format!("the link key {:?} is taken", link.link_key),
        });
    }
    tx.commit().await?;
    let public_url = state.config.public_url();
    Ok((
        StatusCode::CREATED,
        axum::Json(Link::new(link, &public_url)),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLinks {
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A partner's links, newest first (`partners:read`, or the partner's own key).
#[utoipa::path(get, path = "/v1/partners/{id}/links", tag = "links",
    params(("id" = String, Path, description = "Partner id, `ptr_...`"), ListLinks),
    responses(
        (status = 200, body = List<Link>),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn list_links(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ListLinks>,
) -> Result<axum::Json<List<Link>>> {
    authorize(&principal, Some(Scope::PartnersRead), true, &id)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    partners::existing(&mut tx, tenant, &id).await?;
    let rows = store::list(&mut tx, tenant, &id, &page).await?;
    tx.commit().await?;
    let public_url = state.config.public_url();
    let list = page.finish(rows, |l| (l.created_at, &l.id));
    Ok(axum::Json(List {
        data: list
            .data
            .into_iter()
            .map(|l| Link::new(l, &public_url))
            .collect(),
        next_cursor: list.next_cursor,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Follow {
    /// A deep link on one of the campaign's allowed domains; anything else is ignored and the
    /// visitor goes to the campaign's destination.
    pub to: Option<String>,
}

/// Follow a share link: 302 to the campaign's destination (or an allowed deep link) with the
/// click id appended as the campaign's click parameter. The click is buffered and stored within
/// milliseconds (a clean shutdown stores every buffered click first). No key needed.
#[utoipa::path(get, path = "/r/{key}", tag = "links", security(()),
    params(("key" = String, Path, description = "The link key"), Follow),
    responses(
        (status = 302, description = "To the destination; `Location` carries the click id"),
        NotFoundProblem,
        (status = 503, body = crate::http::error::Problem, content_type = "application/problem+json",
            description = "The click buffer stayed full (the database is not keeping up); try again"),
    ))]
pub async fn follow(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<Follow>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    visitor: Visitor,
) -> Result<Response> {
    let not_found = || Error::NotFound {
        code: "link_not_found",
        detail: "no such link".to_owned(),
    };
    if !valid_key(&key) {
        return Err(not_found());
    }
    let target = state.links.resolve(&key).await?.ok_or_else(not_found)?;
    let click_id = ids::new("clk");
    let location = match query.to.as_deref().and_then(|to| deep_link(&target, to)) {
        Some(deep) => with_click_id(deep, &target.click_param, &click_id).into(),
        None => target.location(&click_id),
    };
    let location = HeaderValue::try_from(location).map_err(|e| Error::Internal(e.into()))?;
    let click = Click {
        ip_hash: state
            .secrets
            .fingerprint(&format!("{}:{}", target.tenant_id, peer.ip())),
        user_agent: visitor.user_agent,
        referer: visitor.referer,
        created_at: state.clock.now_ms(),
        id: click_id,
        target,
    };
    if state.links.record(click).await.is_err() {
        return Err(Error::Unavailable);
    }
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// What a click records of the visitor's request headers, truncated; read in place (the
/// `HeaderMap` extractor would copy every header).
pub struct Visitor {
    user_agent: String,
    referer: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // A value `to_str` accepts is visible ASCII, so any byte offset is a character boundary.
        let text = |name: header::HeaderName, max: usize| {
            let value = parts.headers.get(name).and_then(|v| v.to_str().ok());
            let value = value.unwrap_or_default();
            value[..value.len().min(max)].to_owned()
        };
        Ok(Visitor {
            user_agent: text(header::USER_AGENT, 512),
            referer: text(header::REFERER, 2048),
        })
    }
}
