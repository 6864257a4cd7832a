//! `/v1/partners`: create (`partners:write`), find by e-mail and list (`partners:read`), edit,
//! revoke and reinstate; per-partner commission amendments and campaign memberships (admin).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use job_queue::Handoff;

use crate::app::AppState;
use crate::campaigns::{self, CommissionInput, CommissionRule, Partnership};
use crate::clock::rfc3339;
use crate::db::Tx;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Result,
};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{List, Page};
use crate::http::validate::{check_text, nullable, validated};
use crate::identities::{self, normalize_email, normalize_phone};
use crate::keys::{Principal, Scope};
use crate::webhooks::catalog::{PartnerEvent, PartnershipEvent};
use crate::{ids, outbox};

use super::store::{self, HistoryEntry, StoredPartner, WriteError};
use super::{authorize, existing};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_partner, list_partners))
        .routes(routes!(get_partner, update_partner))
        .routes(routes!(revoke_partner))
        .routes(routes!(reinstate_partner))
        .routes(routes!(set_commission_terms, clear_commission_terms))
        .routes(routes!(join_campaign, list_partnerships))
}

/// Largest `metadata` object, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Serialize, ToSchema)]
pub struct Partner {
    pub id: String,
    /// Lower-cased; unique per tenant.
    pub email: String,
    pub name: String,
    /// E.164, e.g. `+447911123456`.
    pub phone: Option<String>,
    /// `invalid_phone` when the phone given in this request could not be read (the partner
    /// is saved without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_error: Option<String>,
    pub metadata: Value,
    /// `active` or `revoked`.
    pub status: String,
    /// `direct` or `network`.
    pub source: String,
    pub network_partner_id: Option<String>,
    /// The partner's creator id on the partner Network, once the Network has it.
    pub network_creator_id: Option<String>,
    /// An admin's amendment (or the terms agreed on the Network), which overrides every
    /// campaign's terms for this partner.
    pub commission_terms: Option<CommissionRule>,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
    /// Revocations and reinstatements, oldest first (on single-partner reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct History {
    /// `revoked` or `reinstated`.
    pub action: String,
    pub reason: Option<String>,
    pub notify: bool,
    pub at: String,
}

impl From<StoredPartner> for Partner {
    fn from(p: StoredPartner) -> Self {
        Partner {
            commission_terms: p.amendment(),
            metadata: serde_json::from_str(&p.metadata).unwrap_or_else(|_| json!({})),
            revoked_at: p.revoked_at.map(rfc3339),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            phone_error: None,
            history: None,
            id: p.id,
            email: p.email,
            name: p.name,
            phone: p.phone,
            status: p.status,
            source: p.source,
            network_partner_id: p.network_partner_id,
            network_creator_id: p.network_creator_id,
            revoked_reason: p.revoked_reason,
        }
    }
}

fn event(p: &StoredPartner, notify: Option<bool>) -> Value {
    json!(PartnerEvent {
        partner_id: p.id.clone(),
        email: p.email.clone(),
        name: p.name.clone(),
        status: p.status.clone(),
        source: p.source.clone(),
        reason: p.revoked_reason.clone(),
        notify,
        created_at: rfc3339(p.created_at),
    })
}

async fn emit(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    p: &StoredPartner,
    kind: &str,
    data: Value,
) -> Result<()> {
    outbox::emit(tx, handoff, &state.clock, &p.tenant_id, kind, data).await?;
    Ok(())
}

#[derive(Deserialize, ToSchema)]
pub struct CreatePartner {
    pub email: String,
    /// 1 to 200 characters.
    pub name: String,
    /// Any common form; numbers without a country code are read in the tenant's region.
    pub phone: Option<String>,
    /// A JSON object of your own (at most 16 KiB).
    pub metadata: Option<Value>,
    /// `direct` (default) or `network` (the partner came from the partner Network).
    pub source: Option<String>,
    /// The partner's id in the Network; required with `source: network`.
    pub network_partner_id: Option<String>,
    /// The partner's commission terms, overriding every campaign's: an admin's, or the terms
    /// agreed on the Network (sent with its federation key). Other keys cannot set them.
    pub commission: Option<CommissionInput>,
}

fn check_email(email: &str, errors: &mut Vec<FieldError>) -> String {
    normalize_email(email).unwrap_or_else(|| {
        errors.push(FieldError::new("email", "is not an e-mail address"));
        String::new()
    })
}

fn check_metadata(metadata: &Value, errors: &mut Vec<FieldError>) -> String {
    let text = metadata.to_string();
    if !metadata.is_object() || text.len() > MAX_METADATA_BYTES {
        errors.push(FieldError::new(
            "metadata",
            "must be a JSON object of at most 16 KiB",
        ));
    }
    text
}

/// The phone in E.164, or the `invalid_phone` note when it cannot be read.
fn read_phone(raw: &str, region: phonenumber::country::Id) -> (Option<String>, Option<String>) {
    match normalize_phone(raw, region) {
        Some(e164) => (Some(e164), None),
        None => (None, Some("invalid_phone".to_owned())),
    }
}

fn email_taken(err: WriteError) -> Error {
    match err {
        WriteError::EmailTaken => Error::Conflict {
            code: "email_taken",
            detail: "a partner with this e-mail address exists".to_owned(),
        },
        WriteError::Database(e) => e.into(),
    }
}

/// Create a partner (`partners:write`). Emits `partner.created`, and `partnership.approved`
/// for partners from the Network. A phone that cannot be read does not fail the request: the
/// response says `phone_error: "invalid_phone"`.
#[utoipa::path(post, path = "/v1/partners", tag = "partners", request_body = CreatePartner,
    responses(
        (status = 201, body = Partner),
        (status = 409, body = crate::http::error::Problem, content_type = "application/problem+json",
            description = "`email_taken`: the tenant has a partner with this e-mail"),
        AuthProblems,
        InvalidProblem,
    ))]
async fn create_partner(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreatePartner>,
) -> Result<(StatusCode, axum::Json<Partner>)> {
    principal.require(Scope::PartnersWrite)?;
    let mut errors = Vec::new();
    let email = check_email(&body.email, &mut errors);
    let name = check_text("name", &body.name, 200, &mut errors);
    let metadata = check_metadata(body.metadata.as_ref().unwrap_or(&json!({})), &mut errors);
    let source = body.source.unwrap_or_else(|| "direct".to_owned());
    match (source.as_str(), &body.network_partner_id) {
        ("direct", None) => {}
        ("direct", Some(_)) => errors.push(FieldError::new(
            "network_partner_id",
            "only partners with source network have one",
        )),
        ("network", Some(id)) if !id.trim().is_empty() && id.len() <= 200 => {}
        ("network", _) => errors.push(FieldError::new(
            "network_partner_id",
            "a partner from the Network needs its Network id",
        )),
        _ => errors.push(FieldError::new("source", "must be direct or network")),
    }
    let terms = match &body.commission {
        Some(input) => input.validate("commission", &mut errors),
        None => None,
    };
    validated(errors)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    // Terms are an admin's to set, or the Network's (agreed there), through its federation key.
    let setting_terms = body.commission.is_some() && principal.kind != crate::keys::KeyKind::Admin;
    if setting_terms
        && !crate::network::is_federation_key(&mut tx, tenant, &principal.key_id).await?
    {
        return Err(Error::invalid(
            "commission",
            "only an admin, or the partner Network's federation key, sets terms at creation",
        ));
    }
    let mut handoff = state.queue.handoff();
    let region = identities::phone_region(&mut tx, tenant, state.config.phone_region).await?;
    let (phone, phone_error) = match &body.phone {
        Some(raw) => read_phone(raw, region),
        None => (None, None),
    };
    let now = state.clock.now_ms();
    let partner = StoredPartner {
        id: ids::new("ptr"),
        tenant_id: tenant.clone(),
        email,
        name,
        phone,
        metadata,
        status: "active".to_owned(),
        source,
        network_creator_id: body.network_partner_id.clone(),
        network_revision: None,
        network_partner_id: body.network_partner_id,
        terms_type: None,
        terms_bps: None,
        terms_amount: None,
        terms_currency: None,
        revoked_at: None,
        revoked_reason: None,
        created_at: now,
        updated_at: now,
    };
    let mut partner = partner;
    partner.set_amendment(terms.as_ref());
    store::insert(&mut tx, &partner)
        .await
        .map_err(email_taken)?;
    crate::network::enqueue_upsert(&mut tx, &mut handoff, &partner, true).await?;
    identities::bind_member(
        &mut tx,
        tenant,
        &partner.id,
        &partner.email,
        partner.phone.as_deref(),
        now,
    )
    .await?;
    emit(
        &state,
        &mut tx,
        &mut handoff,
        &partner,
        "partner.created",
        event(&partner, None),
    )
    .await?;
    if let Some(network_id) = &partner.network_partner_id {
        let approved = json!(PartnershipEvent {
            partner_id: partner.id.clone(),
            network_partner_id: network_id.clone(),
            approved_at: rfc3339(now),
        });
        emit(
            &state,
            &mut tx,
            &mut handoff,
            &partner,
            "partnership.approved",
            approved,
        )
        .await?;
    }
    tx.commit().await?;
    handoff.start();
    let mut created = Partner::from(partner);
    created.phone_error = phone_error;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListPartners {
    /// Only the partner with exactly this e-mail (compared lower-cased).
    pub email: Option<String>,
    /// `active` or `revoked`.
    pub status: Option<String>,
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List partners, newest first; find one by e-mail (`partners:read`).
#[utoipa::path(get, path = "/v1/partners", tag = "partners", params(ListPartners),
    responses(
        (status = 200, body = List<Partner>),
        AuthProblems,
        InvalidProblem,
    ))]
async fn list_partners(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListPartners>,
) -> Result<axum::Json<List<Partner>>> {
    principal.require(Scope::PartnersRead)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    if query
        .status
        .as_deref()
        .is_some_and(|s| s != "active" && s != "revoked")
    {
        return Err(Error::invalid("status", "must be active or revoked"));
    }
    // Stored addresses are normalized; one that is not an address matches none of them.
    let email = match query.email.as_deref().map(normalize_email) {
        Some(None) => {
            return Ok(axum::Json(List {
                data: Vec::new(),
                next_cursor: None,
            }))
        }
        given => given.flatten(),
    };
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let rows = store::list(
        &mut tx,
        tenant,
        email.as_deref(),
        query.status.as_deref(),
        &page,
    )
    .await?;
    tx.commit().await?;
    let list = page.finish(rows, |p| (p.created_at, &p.id));
    Ok(axum::Json(List {
        data: list.data.into_iter().map(Partner::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

/// Get a partner with its history (`partners:read`, or the partner's own key).
#[utoipa::path(get, path = "/v1/partners/{id}", tag = "partners",
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 200, body = Partner),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn get_partner(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Partner>> {
    authorize(&principal, Some(Scope::PartnersRead), true, &id)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let partner = existing(&mut tx, tenant, &id).await?;
    let history = store::history(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    let mut partner = Partner::from(partner);
    partner.history = Some(history.into_iter().map(History::from).collect());
    Ok(axum::Json(partner))
}

impl From<HistoryEntry> for History {
    fn from(h: HistoryEntry) -> Self {
        History {
            action: h.action,
            reason: h.reason,
            notify: h.notify == 1,
            at: rfc3339(h.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct UpdatePartner {
    pub email: Option<String>,
    pub name: Option<String>,
    /// A new phone, or `null` to remove it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    /// Replaces the whole object.
    pub metadata: Option<Value>,
}

/// Change a partner's e-mail, name, phone or metadata (`partners:write`).
#[utoipa::path(patch, path = "/v1/partners/{id}", tag = "partners", request_body = UpdatePartner,
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 200, body = Partner),
        (status = 409, body = crate::http::error::Problem, content_type = "application/problem+json",
            description = "`email_taken`"),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn update_partner(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<UpdatePartner>,
) -> Result<axum::Json<Partner>> {
    principal.require(Scope::PartnersWrite)?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let mut partner = existing(&mut tx, tenant, &id).await?;
    let mut errors = Vec::new();
    if let Some(email) = &body.email {
        partner.email = check_email(email, &mut errors);
    }
    if let Some(name) = &body.name {
        partner.name = check_text("name", name, 200, &mut errors);
    }
    if let Some(metadata) = &body.metadata {
        partner.metadata = check_metadata(metadata, &mut errors);
    }
    validated(errors)?;
    let mut phone_error = None;
    match body.phone {
        Some(Some(raw)) => {
            let region =
                identities::phone_region(&mut tx, tenant, state.config.phone_region).await?;
            (partner.phone, phone_error) = read_phone(&raw, region);
        }
        Some(None) => partner.phone = None,
        None => {}
    }
    let now = state.clock.now_ms();
    partner.updated_at = now;
    store::update(&mut tx, &partner)
        .await
        .map_err(email_taken)?;
    let mut handoff = state.queue.handoff();
    if partner.network_revision.is_some() {
        // The Network has (or is getting) this partner: it gets the edit too.
        crate::network::enqueue_upsert(&mut tx, &mut handoff, &partner, false).await?;
    }
    identities::bind_member(
        &mut tx,
        tenant,
        &partner.id,
        &partner.email,
        partner.phone.as_deref(),
        now,
    )
    .await?;
    tx.commit().await?;
    handoff.start();
    let mut updated = Partner::from(partner);
    updated.phone_error = phone_error;
    Ok(axum::Json(updated))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct RevokePartner {
    /// Why (kept in the history and sent in `partner.revoked`).
    pub reason: Option<String>,
    /// Whether the partner should be told; carried in `partner.revoked` for a subscriber to act on.
    pub notify: Option<bool>,
}

/// Revoke a partner now (`partners:write`): its keys stop working at once, its links keep
/// redirecting but their clicks are flagged and never attributed. Emits `partner.revoked`.
/// Revoking a revoked partner changes nothing. The body is optional.
#[utoipa::path(post, path = "/v1/partners/{id}/revoke", tag = "partners",
    request_body(content = Option<RevokePartner>),
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 200, body = Partner),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn revoke_partner(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Partner>> {
    principal.require(Scope::PartnersWrite)?;
    let body: RevokePartner = if body.iter().all(u8::is_ascii_whitespace) {
        RevokePartner::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidBody(e.to_string()))?
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(Error::invalid("reason", "must be at most 500 characters"));
    }
    let notify = body.notify.unwrap_or(false);
    change_status(&state, &principal, &id, "revoked", body.reason, notify).await
}

/// Reinstate a revoked partner (`partners:write`): its keys work again. Emits
/// `partner.activated`. Reinstating an active partner changes nothing.
#[utoipa::path(post, path = "/v1/partners/{id}/reinstate", tag = "partners",
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 200, body = Partner),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn reinstate_partner(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Partner>> {
    principal.require(Scope::PartnersWrite)?;
    change_status(&state, &principal, &id, "active", None, false).await
}

async fn change_status(
    state: &AppState,
    principal: &Principal,
    id: &str,
    status: &str,
    reason: Option<String>,
    notify: bool,
) -> Result<axum::Json<Partner>> {
    // A click's revoked flag is the partner's status when the click is stored (see `links`).
    // Clicks this node answered before the change are stored first, so they carry the status
    // they were made under.
    state.links.flush().await;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let mut handoff = state.queue.handoff();
    let mut partner = existing(&mut tx, tenant, id).await?;
    if partner.status != status {
        let now = state.clock.now_ms();
        let revoking = status == "revoked";
        partner.status = status.to_owned();
        partner.updated_at = now;
        partner.revoked_at = revoking.then_some(now);
        partner.revoked_reason = if revoking { reason.clone() } else { None };
        store::update(&mut tx, &partner)
            .await
            .map_err(email_taken)?;
        // Mirrored whatever `auto_enroll` says: a revoked partner must stop being matched.
        crate::network::enqueue_upsert(&mut tx, &mut handoff, &partner, false).await?;
        let entry = HistoryEntry {
            action: if revoking { "revoked" } else { "reinstated" }.to_owned(),
            reason,
            notify: notify.into(),
            created_at: now,
        };
        store::record(&mut tx, &partner, &entry, &ids::new("phe")).await?;
        let (kind, notify) = if revoking {
            ("partner.revoked", Some(notify))
        } else {
            ("partner.activated", None)
        };
        emit(
            state,
            &mut tx,
            &mut handoff,
            &partner,
            kind,
            event(&partner, notify),
        )
        .await?;
    }
    tx.commit().await?;
    handoff.start();
    Ok(axum::Json(partner.into()))
}

/// Set the partner's commission terms, overriding every campaign's (admin).
#[utoipa::path(put, path = "/v1/partners/{id}/commission-terms", tag = "partners",
    request_body = CommissionInput,
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 200, body = Partner),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn set_commission_terms(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<CommissionInput>,
) -> Result<axum::Json<Partner>> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let rule = body.validate("commission", &mut errors);
    validated(errors)?;
    amend(&state, &principal, &id, rule.as_ref())
        .await
        .map(axum::Json)
}

/// Remove the partner's amendment: campaign terms apply again (admin).
#[utoipa::path(delete, path = "/v1/partners/{id}/commission-terms", tag = "partners",
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 204, description = "Cleared"),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn clear_commission_terms(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    principal.require_admin()?;
    amend(&state, &principal, &id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn amend(
    state: &AppState,
    principal: &Principal,
    id: &str,
    rule: Option<&CommissionRule>,
) -> Result<Partner> {
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let mut partner = existing(&mut tx, tenant, id).await?;
    partner.set_amendment(rule);
    partner.updated_at = state.clock.now_ms();
    store::update(&mut tx, &partner)
        .await
        .map_err(email_taken)?;
    tx.commit().await?;
    Ok(partner.into())
}

/// A partner's membership of a campaign.
#[derive(Serialize, ToSchema)]
pub struct Membership {
    pub id: String,
    pub partner_id: String,
    pub campaign_id: String,
    /// The campaign's terms when the partner joined.
    pub commission: CommissionRule,
    /// What the partner earns now: its amendment if it has one, else `commission`.
    pub effective_commission: CommissionRule,
    pub recurring: bool,
    pub holdback_days: i64,
    pub joined_at: String,
}

impl Membership {
    fn new(p: Partnership, amendment: Option<&CommissionRule>) -> Self {
        let commission = p.commission();
        Membership {
            effective_commission: amendment.cloned().unwrap_or_else(|| commission.clone()),
            commission,
            recurring: p.recurring == 1,
            holdback_days: p.holdback_days,
            joined_at: rfc3339(p.created_at),
            id: p.id,
            partner_id: p.partner_id,
            campaign_id: p.campaign_id,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct JoinCampaign {
    pub campaign_id: String,
}

/// Add the partner to a campaign, snapshotting its current terms (admin). 201 when the partner
/// joined now, 200 when it was a member already (terms unchanged).
#[utoipa::path(post, path = "/v1/partners/{id}/campaigns", tag = "partners",
    request_body = JoinCampaign,
    params(("id" = String, Path, description = "Partner id, `ptr_...`")),
    responses(
        (status = 201, body = Membership, description = "Joined"),
        (status = 200, body = Membership, description = "Already a member"),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn join_campaign(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<JoinCampaign>,
) -> Result<(StatusCode, axum::Json<Membership>)> {
    principal.require_admin()?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.write(tenant).await?;
    let partner = existing(&mut tx, tenant, &id).await?;
    let campaign = campaigns::routes::existing(&mut tx, tenant, &body.campaign_id).await?;
    let (partnership, created) = campaigns::store::join(
        &mut tx,
        &campaign,
        &partner.id,
        &ids::new("pts"),
        state.clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(Membership::new(partnership, partner.amendment().as_ref())),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListPage {
    /// Page size, 1 to 200 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The partner's campaigns and terms, newest first (`partners:read`, or the partner's own key).
#[utoipa::path(get, path = "/v1/partners/{id}/campaigns", tag = "partners",
    params(("id" = String, Path, description = "Partner id, `ptr_...`"), ListPage),
    responses(
        (status = 200, body = List<Membership>),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn list_partnerships(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ListPage>,
) -> Result<axum::Json<List<Membership>>> {
    authorize(&principal, Some(Scope::PartnersRead), true, &id)?;
    let page = Page::new(query.limit, query.cursor.as_deref())?;
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let partner = existing(&mut tx, tenant, &id).await?;
    let rows = campaigns::store::partnerships(&mut tx, tenant, &id, &page).await?;
    tx.commit().await?;
    let amendment = partner.amendment();
    let list = page.finish(rows, |p| (p.created_at, &p.id));
    Ok(axum::Json(List {
        data: list
            .data
            .into_iter()
            .map(|p| Membership::new(p, amendment.as_ref()))
            .collect(),
        next_cursor: list.next_cursor,
    }))
}
