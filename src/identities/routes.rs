//! `/v1/identities`: stitch what a backend knows about a customer (e-mail, phone, user id,
//! Stripe customer, CRM contact) into one customer, optionally tied to the click that brought
//! them; and resolve an identifier to its subject.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::{
    AuthProblems, Error, FieldError, InvalidProblem, NotFoundProblem, Result,
};
use crate::http::extract::{Json, Query};
use crate::ids;
use crate::keys::{Principal, Scope};

use super::{normalize, phone_region, store, Identifiers, Namespace, Subject};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(bind))
        .routes(routes!(resolve))
}

#[derive(Deserialize, ToSchema)]
pub struct BindIdentities {
    /// The click (`clk_...`, appended to the destination URL by the click router) that brought
    /// this customer.
    pub click_id: Option<String>,
    /// An existing customer to bind to; omit to find the customer by the identifiers (or
    /// create one).
    pub customer_id: Option<String>,
    #[serde(default)]
    pub identities: Identifiers,
}

#[derive(Serialize, ToSchema)]
pub struct Binding {
    pub namespace: Namespace,
    /// As stored: normalized.
    pub identifier: String,
}

#[derive(Serialize, ToSchema)]
pub struct BoundCustomer {
    pub customer_id: String,
    /// True when this call created the customer.
    pub created: bool,
    pub identities: Vec<Binding>,
    pub click_id: Option<String>,
}

/// Bind identities to one customer (`events:write`). Idempotent: 201 when the customer was
/// created, 200 otherwise. An identifier bound to another customer is 409 `identity_conflict`.
#[utoipa::path(post, path = "/v1/identities", tag = "identities", request_body = BindIdentities,
    responses(
        (status = 201, body = BoundCustomer, description = "A customer was created"),
        (status = 200, body = BoundCustomer, description = "Bound to an existing customer"),
        (status = 409, body = crate::http::error::Problem, content_type = "application/problem+json",
            description = "`identity_conflict`: an identifier or the click belongs to another customer"),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn bind(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<BindIdentities>,
) -> Result<(StatusCode, axum::Json<BoundCustomer>)> {
    principal.require(Scope::EventsWrite)?;
    let tenant = &principal.tenant_id;
    if body.click_id.is_some() {
        // A click this node answered moments ago may still be in the recorder's buffer.
        state.links.flush().await;
    }
    let mut tx = state.db.write(tenant).await?;
    let region = phone_region(&mut tx, tenant, state.config.phone_region).await?;
    let mut errors = Vec::new();
    let pairs = body
        .identities
        .normalized(region, "identities")
        .unwrap_or_else(|invalid| {
            errors.extend(invalid);
            Vec::new()
        });
    if let Some(click) = body
        .click_id
        .as_deref()
        .filter(|c| !ids::is_valid("clk", c))
    {
        errors.push(FieldError::new(
            "click_id",
            format!("{click:?} is not a click id (clk_...)"),
        ));
    }
    if let Some(customer) = body
        .customer_id
        .as_deref()
        .filter(|c| !ids::is_valid("cus", c))
    {
        errors.push(FieldError::new(
            "customer_id",
            format!("{customer:?} is not a customer id (cus_...)"),
        ));
    }
    if errors.is_empty()
        && pairs.is_empty()
        && body.click_id.is_none()
        && body.customer_id.is_none()
    {
        errors.push(FieldError::new(
            "identities",
            "give at least one identifier, a click_id or a customer_id",
        ));
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }

    let (customer_id, created) = super::bind(
        &mut tx,
        tenant,
        &pairs,
        body.click_id.as_deref(),
        body.customer_id.as_deref(),
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
        axum::Json(BoundCustomer {
            customer_id,
            created,
            identities: pairs
                .into_iter()
                .map(|(namespace, identifier)| Binding {
                    namespace,
                    identifier,
                })
                .collect(),
            click_id: body.click_id,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Resolve {
    /// `email`, `phone`, `whatsapp`, `user_id`, `stripe_customer` or `crm_contact_id`.
    pub namespace: String,
    /// In any form the namespace accepts (it is normalized first).
    pub identifier: String,
    /// `customer` or `member`; without it a customer is preferred to a member.
    pub subject_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Resolved {
    pub namespace: Namespace,
    pub identifier: String,
    #[serde(flatten)]
    pub subject: Subject,
}

/// Who an identifier belongs to (`partners:read`): a customer or a member (partner).
#[utoipa::path(get, path = "/v1/identities/resolve", tag = "identities", params(Resolve),
    responses(
        (status = 200, body = Resolved),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<Resolve>,
) -> Result<axum::Json<Resolved>> {
    principal.require(Scope::PartnersRead)?;
    let namespace = Namespace::parse(&query.namespace).ok_or_else(|| {
        Error::invalid(
            "namespace",
            "must be one of email, phone, whatsapp, user_id, stripe_customer, crm_contact_id",
        )
    })?;
    let subject_type = query.subject_type.as_deref();
    if subject_type.is_some_and(|t| t != "customer" && t != "member") {
        return Err(Error::invalid("subject_type", "must be customer or member"));
    }
    let tenant = &principal.tenant_id;
    let mut tx = state.db.read(tenant).await?;
    let region = phone_region(&mut tx, tenant, state.config.phone_region).await?;
    let identifier = normalize(namespace, &query.identifier, region)
        .map_err(|message| Error::invalid("identifier", message))?;
    let subject = store::find_subject(&mut tx, tenant, namespace, &identifier, subject_type)
        .await?
        .ok_or_else(|| Error::NotFound {
            code: "identity_not_found",
            detail: format!("nothing is bound to {} {identifier:?}", namespace.as_str()),
        })?;
    tx.commit().await?;
    Ok(axum::Json(Resolved {
        namespace,
        identifier,
        subject,
    }))
}
