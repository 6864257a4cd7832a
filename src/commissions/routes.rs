//! `/v1/commissions` and `/v1/partners/{id}/commissions` (`commissions:read`; a partner's own
//! key lists its own under its partner).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::http::error::{AuthProblems, Error, InvalidProblem, NotFoundProblem, Result};
use crate::http::extract::{Path, Query};
use crate::http::pagination::{List, Page};
use crate::keys::{Principal, Scope};
use crate::partners::{self, authorize};

use super::store::{self, StoredCommission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_commissions))
        .routes(routes!(get_commission))
        .routes(routes!(partner_commissions))
}

#[derive(Serialize, ToSchema)]
pub struct Commission {
    pub id: String,
    pub partner_id: String,
    pub campaign_id: String,
    /// The conversion's `event_id`.
    pub event_id: String,
    pub click_id: String,
    pub order_id: String,
    /// Stable per conversion: trackers and receivers deduplicate on it.
    pub transaction_id: String,
    /// Minor units of `currency`, as accrued.
    pub amount: i64,
    /// What partial refunds of its order took back (minor units): it pays
    /// `amount - reversed_amount`.
    pub reversed_amount: i64,
    pub currency: String,
    /// `pending`, `approved`, `reversed` or `paid`.
    pub status: String,
    /// The payout that holds (pending) or paid it.
    pub payout_id: Option<String>,
    /// When the holdback ends and the commission is approved.
    pub matures_at: String,
    pub approved_at: Option<String>,
    pub reversed_at: Option<String>,
    /// When a refund of its order arrived (also on paid commissions, which are not reversed).
    pub refunded_at: Option<String>,
    pub created_at: String,
}

impl From<StoredCommission> for Commission {
    fn from(c: StoredCommission) -> Self {
        Commission {
            matures_at: rfc3339(c.matures_at),
            approved_at: c.approved_at.map(rfc3339),
            reversed_at: c.reversed_at.map(rfc3339),
            refunded_at: c.refunded_at.map(rfc3339),
            created_at: rfc3339(c.created_at),
            id: c.id,
            partner_id: c.partner_id,
            campaign_id: c.campaign_id,
            event_id: c.event_id,
            click_id: c.click_id,
            order_id: c.order_id,
            transaction_id: c.transaction_id,
            amount: c.amount,
            reversed_amount: c.reversed_amount,
            currency: c.currency,
            status: c.status,
            payout_id: c.payout_id,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListCommissions {
    pub partner_id: Option<String>,
    /// `pending`, `approved`, `reversed` or `paid`.
    pub status: Option<String>,
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

async fn page_of(
    state: &AppState,
    tenant: &str,
    partner_id: Option<&str>,
    query: &ListCommissions,
) -> Result<List<Commission>> {
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    if query
        .status
        .as_deref()
        .is_some_and(|s| !["pending", "approved", "reversed", "paid"].contains(&s))
    {
        return Err(Error::invalid(
            "status",
            "must be pending, approved, reversed or paid",
        ));
    }
    let mut tx = state.db.read(tenant).await?;
    if let Some(partner) = partner_id {
        partners::existing(&mut tx, tenant, partner).await?;
    }
    let rows = store::list(&mut tx, tenant, partner_id, query.status.as_deref(), &page).await?;
    tx.commit().await?;
    let list = page.finish(rows, |c| (c.created_at, &c.id));
    Ok(List {
        data: list.data.into_iter().map(Commission::from).collect(),
        next_cursor: list.next_cursor,
    })
}

/// List commissions, newest first (`commissions:read`).
#[utoipa::path(get, path = "/v1/commissions", tag = "commissions", params(ListCommissions),
    responses(
        (status = 200, body = List<Commission>),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn list_commissions(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListCommissions>,
) -> Result<axum::Json<List<Commission>>> {
    principal.require(Scope::CommissionsRead)?;
    let partner = query.partner_id.clone();
    let list = page_of(&state, &principal.tenant_id, partner.as_deref(), &query).await?;
    Ok(axum::Json(list))
}

/// A partner's commissions, newest first (`commissions:read`, or the partner's own key).
#[utoipa::path(get, path = "/v1/partners/{id}/commissions", tag = "commissions",
    params(("id" = String, Path, description = "Partner id, `ptr_...`"), ListCommissions),
    responses(
        (status = 200, body = List<Commission>),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn partner_commissions(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ListCommissions>,
) -> Result<axum::Json<List<Commission>>> {
    authorize(&principal, Some(Scope::CommissionsRead), true, &id)?;
    let list = page_of(&state, &principal.tenant_id, Some(&id), &query).await?;
    Ok(axum::Json(list))
}

/// Get a commission (`commissions:read`; partner keys list their own under their partner).
#[utoipa::path(get, path = "/v1/commissions/{id}", tag = "commissions",
    params(("id" = String, Path, description = "Commission id, `com_...`")),
    responses(
        (status = 200, body = Commission),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn get_commission(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Commission>> {
    let not_found = || Error::NotFound {
        code: "commission_not_found",
        detail: format!("no commission {id}"),
    };
    principal.require(Scope::CommissionsRead)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let commission = store::find(&mut tx, tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    tx.commit().await?;
    Ok(axum::Json(commission.into()))
}
