//! `/v1/campaigns` (admin keys): create, list, read, edit and end campaigns.

use axum::extract::State;
use axum::http::StatusCode;
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
use crate::http::validate::{check_text, check_time, check_url, nullable, validated};
use crate::ids;
use crate::keys::Principal;

use super::store::{self, StoredCampaign};
use super::{domain_name, CommissionInput, CommissionRule};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, update_campaign))
        .routes(routes!(end_campaign))
}

/// Defaults of a new campaign.
const DEFAULT_CLICK_PARAM: &str = "click_id";
const DEFAULT_HOLDBACK_DAYS: i64 = 30;
const DEFAULT_WINDOW_DAYS: i64 = 30;

#[derive(Serialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    /// Where the click router sends visitors.
    pub destination_url: String,
    /// Host names `?to=` deep links may point to (subdomains included), besides the
    /// destination's own host.
    pub allowed_domains: Vec<String>,
    /// Query parameter the click id is appended as.
    pub click_param: String,
    pub commission: CommissionRule,
    /// Whether renewals earn commission too.
    pub recurring: bool,
    /// Days a commission stays pending before it is approved.
    pub holdback_days: i64,
    /// `last_click` or `first_click`.
    pub attribution_model: String,
    /// Days after a click within which a conversion is attributed to it.
    pub attribution_window_days: i64,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    /// `scheduled`, `active` or `ended`, from the dates.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Campaign {
    fn new(c: StoredCampaign, now: i64) -> Self {
        let status = if c.ended(now) {
            "ended"
        } else if c.starts_at.is_some_and(|start| start > now) {
            "scheduled"
        } else {
            "active"
        };
        Campaign {
            allowed_domains: c.domains(),
            commission: c.commission(),
            recurring: c.recurring == 1,
            starts_at: c.starts_at.map(rfc3339),
            ends_at: c.ends_at.map(rfc3339),
            status: status.to_owned(),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
            id: c.id,
            name: c.name,
            destination_url: c.destination_url,
            click_param: c.click_param,
            holdback_days: c.holdback_days,
            attribution_model: c.attribution_model,
            attribution_window_days: c.attribution_window_days,
        }
    }
}

/// The optional terms of a campaign, in creation and in edits.
#[derive(Deserialize, ToSchema, Default)]
pub struct CampaignOptions {
    /// Host names deep links may point to, e.g. `["shop.example.com"]`.
    pub allowed_domains: Option<Vec<String>>,
    /// 1 to 64 characters of letters, digits, `_` and `-` (default `click_id`).
    pub click_param: Option<String>,
    /// Renewals earn commission too (default false).
    pub recurring: Option<bool>,
    /// 0 to 365 (default 30).
    pub holdback_days: Option<i64>,
    /// `last_click` (default) or `first_click`.
    pub attribution_model: Option<String>,
    /// 1 to 365 (default 30).
    pub attribution_window_days: Option<i64>,
    /// RFC 3339; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub starts_at: Option<Option<String>>,
    /// RFC 3339, after `starts_at`; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub ends_at: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateCampaign {
    /// 1 to 200 characters.
    pub name: String,
    pub destination_url: String,
    pub commission: CommissionInput,
    #[serde(flatten)]
    pub options: CampaignOptions,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateCampaign {
    pub name: Option<String>,
    pub destination_url: Option<String>,
    /// New terms apply to partners who join from now on; existing partnerships keep theirs.
    pub commission: Option<CommissionInput>,
    #[serde(flatten)]
    pub options: CampaignOptions,
}

/// Applies `options` to `c`, collecting a message per invalid field.
fn apply(c: &mut StoredCampaign, options: CampaignOptions, errors: &mut Vec<FieldError>) {
    if let Some(domains) = options.allowed_domains {
        let mut valid = Vec::new();
        for raw in &domains {
            match domain_name(raw) {
                Some(domain) if !valid.contains(&domain) => valid.push(domain),
                Some(_) => {}
                None => errors.push(FieldError::new(
                    "allowed_domains",
                    format!("{raw:?} is not a host name such as shop.example.com"),
                )),
            }
        }
        if valid.len() > 50 {
            errors.push(FieldError::new("allowed_domains", "at most 50 domains"));
        }
        c.allowed_domains = valid.join(" ");
    }
    if let Some(param) = options.click_param {
        let ok = (1..=64).contains(&param.len())
            && param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            errors.push(FieldError::new(
                "click_param",
                "must be 1 to 64 characters of letters, digits, '_' and '-'",
            ));
        }
        c.click_param = param;
    }
    if let Some(recurring) = options.recurring {
        c.recurring = recurring.into();
    }
    if let Some(days) = options.holdback_days {
        if !(0..=365).contains(&days) {
            errors.push(FieldError::new("holdback_days", "must be 0 to 365"));
        }
        c.holdback_days = days;
    }
    if let Some(model) = options.attribution_model {
        if model != "last_click" && model != "first_click" {
            errors.push(FieldError::new(
                "attribution_model",
                "must be last_click or first_click",
            ));
        }
        c.attribution_model = model;
    }
    if let Some(days) = options.attribution_window_days {
        if !(1..=365).contains(&days) {
            errors.push(FieldError::new(
                "attribution_window_days",
                "must be 1 to 365",
            ));
        }
        c.attribution_window_days = days;
    }
    if let Some(starts_at) = options.starts_at {
        c.starts_at = starts_at.and_then(|t| check_time("starts_at", &t, errors));
    }
    if let Some(ends_at) = options.ends_at {
        c.ends_at = ends_at.and_then(|t| check_time("ends_at", &t, errors));
    }
    if let (Some(start), Some(end)) = (c.starts_at, c.ends_at) {
        if end <= start {
            errors.push(FieldError::new("ends_at", "must be after starts_at"));
        }
    }
}

/// Create a campaign (admin).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CreateCampaign,
    responses(
        (status = 201, body = Campaign),
        AuthProblems,
        InvalidProblem,
    ))]
async fn create_campaign(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateCampaign>,
) -> Result<(StatusCode, axum::Json<Campaign>)> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let name = check_text("name", &body.name, 200, &mut errors);
    check_url("destination_url", &body.destination_url, &mut errors);
    let rule = body.commission.validate("commission", &mut errors);
    let now = state.clock.now_ms();
    let mut campaign = StoredCampaign {
        id: ids::new("cmp"),
        tenant_id: principal.tenant_id.clone(),
        name,
        destination_url: body.destination_url,
        allowed_domains: String::new(),
        click_param: DEFAULT_CLICK_PARAM.to_owned(),
        commission_type: String::new(),
        commission_bps: None,
        commission_amount: None,
        commission_currency: None,
        recurring: 0,
        holdback_days: DEFAULT_HOLDBACK_DAYS,
        attribution_model: "last_click".to_owned(),
        attribution_window_days: DEFAULT_WINDOW_DAYS,
        starts_at: None,
        ends_at: None,
        created_at: now,
        updated_at: now,
    };
    apply(&mut campaign, body.options, &mut errors);
    validated(errors)?;
    campaign.set_commission(&rule.expect("validated"));
    let mut tx = state.db.write(&principal.tenant_id).await?;
    store::insert(&mut tx, &campaign).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Campaign::new(campaign, now)),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListCampaigns {
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List campaigns, newest first (admin).
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", params(ListCampaigns),
    responses(
        (status = 200, body = List<Campaign>),
        AuthProblems,
        InvalidProblem,
    ))]
async fn list_campaigns(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListCampaigns>,
) -> Result<axum::Json<List<Campaign>>> {
    principal.require_admin()?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let mut tx = state.db.read(&principal.tenant_id).await?;
    let rows = store::list(&mut tx, &principal.tenant_id, &page).await?;
    tx.commit().await?;
    let now = state.clock.now_ms();
    let list = page.finish(rows, |c| (c.created_at, &c.id));
    Ok(axum::Json(List {
        data: list
            .data
            .into_iter()
            .map(|c| Campaign::new(c, now))
            .collect(),
        next_cursor: list.next_cursor,
    }))
}

/// The tenant's campaign `id`, or 404 `campaign_not_found`.
pub(crate) async fn existing(tx: &mut Tx, tenant: &str, id: &str) -> Result<StoredCampaign> {
    store::find(tx, tenant, id)
        .await?
        .ok_or_else(|| Error::NotFound {
            code: "campaign_not_found",
            detail: format!("no campaign {id}"),
        })
}

/// Get a campaign (admin).
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id, `cmp_...`")),
    responses(
        (status = 200, body = Campaign),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn get_campaign(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Campaign>> {
    principal.require_admin()?;
    let mut tx = state.db.read(&principal.tenant_id).await?;
    let campaign = existing(&mut tx, &principal.tenant_id, &id).await?;
    tx.commit().await?;
    Ok(axum::Json(Campaign::new(campaign, state.clock.now_ms())))
}

/// Edit a campaign (admin). New commission terms apply to partnerships made from now on.
#[utoipa::path(patch, path = "/v1/campaigns/{id}", tag = "campaigns", request_body = UpdateCampaign,
    params(("id" = String, Path, description = "Campaign id, `cmp_...`")),
    responses(
        (status = 200, body = Campaign),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn update_campaign(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdateCampaign>,
) -> Result<axum::Json<Campaign>> {
    principal.require_admin()?;
    let mut tx = state.db.write(&principal.tenant_id).await?;
    let mut campaign = existing(&mut tx, &principal.tenant_id, &id).await?;
    let mut errors = Vec::new();
    if let Some(name) = body.name {
        campaign.name = check_text("name", &name, 200, &mut errors);
    }
    if let Some(url) = body.destination_url {
        check_url("destination_url", &url, &mut errors);
        campaign.destination_url = url;
    }
    let rule = body
        .commission
        .map(|input| input.validate("commission", &mut errors));
    apply(&mut campaign, body.options, &mut errors);
    validated(errors)?;
    if let Some(Some(rule)) = rule {
        campaign.set_commission(&rule);
    }
    let now = state.clock.now_ms();
    campaign.updated_at = now;
    store::update(&mut tx, &campaign).await?;
    tx.commit().await?;
    state.links.forget_cached();
    Ok(axum::Json(Campaign::new(campaign, now)))
}

/// End a campaign now (admin). Its links keep redirecting; a campaign that ended earlier keeps
/// its end.
#[utoipa::path(post, path = "/v1/campaigns/{id}/end", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id, `cmp_...`")),
    responses(
        (status = 200, body = Campaign),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn end_campaign(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Campaign>> {
    principal.require_admin()?;
    let mut tx = state.db.write(&principal.tenant_id).await?;
    let mut campaign = existing(&mut tx, &principal.tenant_id, &id).await?;
    let now = state.clock.now_ms();
    if !campaign.ended(now) {
        campaign.ends_at = Some(now);
        campaign.updated_at = now;
        store::update(&mut tx, &campaign).await?;
    }
    tx.commit().await?;
    Ok(axum::Json(Campaign::new(campaign, now)))
}
