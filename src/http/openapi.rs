//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Routes are registered through `utoipa_axum`, so a route cannot exist without appearing in the
//! document. The committed copy in `openapi/openapi.json` is checked against [`document`] by a
//! test and by CI.

use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::Required;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Self-hostable integration hub for partner programs.\n\n\
            Authenticate with `Authorization: Bearer <key>`. A key belongs to one tenant, so URLs \
            need no tenant; every `/v1/...` route is also reachable as `/t/{slug}/v1/...`, where \
            the slug must be the key's tenant (404 otherwise).\n\n\
            Errors are RFC 9457 problem+json documents with a stable `code`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "keys", description = "Who am I, and API keys"),
        (name = "partners", description = "Partners, their commission terms and campaigns"),
        (name = "campaigns", description = "Campaigns: destinations, commission rules, attribution"),
        (name = "links", description = "Share links and the click router"),
        (name = "events", description = "Conversion events in: attribution, commissions, refunds"),
        (name = "commissions", description = "What partners earned"),
        (name = "postbacks", description = "Partners' ad-tracker postbacks (GET URL templates)"),
        (name = "identities", description = "The identity graph: customers and members by e-mail, phone and ids"),
        (name = "webhooks", description = "Webhook endpoints (REST hooks) and their deliveries"),
        (name = "stripe", description = "Stripe in: settings, the signed webhook, stored events"),
        (name = "payouts", description = "Payouts: Connect accounts, runs, transfers, balances"),
        (name = "network", description = "The partner Network: connect, outbox, backfill, proxied pages"),
        (name = "operations", description = "Health, readiness, metrics and the job queue"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `sy_<prefix>_<secret>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`SWITCHYARD_METRICS_TOKEN`, when the server is configured with one",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every documented route of the API, with its document.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::keys::routes::router())
        .merge(super::ops::router())
        .merge(crate::queue::router())
        .merge(crate::partners::routes::router())
        .merge(crate::campaigns::routes::router())
        .merge(crate::links::routes::router())
        .merge(crate::identities::routes::router())
        .merge(crate::events::routes::router())
        .merge(crate::commissions::routes::router())
        .merge(crate::postbacks::routes::router())
        .merge(crate::webhooks::routes::router())
        .merge(crate::webhooks::deliveries::router())
        .merge(crate::stripe::routes::router())
        .merge(crate::payouts::routes::router())
        .merge(crate::network::routes::router())
}

/// The API's routes and its document, with what no single route declares: the optional
/// `Idempotency-Key` header every POST accepts.
pub fn split() -> (axum::Router<AppState>, Document) {
    let (router, mut document) = api_router().split_for_parts();
    let header = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the first request's answer is replayed for a day to a request \
             from the same API key with the same key and body (`Idempotent-Replayed: true`); \
             the same key with another request is 422 `idempotency_key_reused`, and 409 \
             `idempotency_key_in_use` while the first is running. Keys are per calling API key: \
             another API key's request with the same key runs, and is authorized, on its own.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255)),
        ))
        .build();
    for item in document.paths.paths.values_mut() {
        if let Some(post) = item.post.as_mut() {
            post.parameters
                .get_or_insert_with(Vec::new)
                .push(header.clone());
        }
    }
    (router, document)
}

/// The OpenAPI document as served at `/openapi.json` and committed in `openapi/openapi.json`.
pub fn document() -> Document {
    split().1
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}
