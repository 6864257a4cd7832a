//! Authentication: `Authorization: Bearer <key>` -> the calling key, its tenant and its scopes,
//! settled once per request by the [`authenticate`] middleware (which also applies the rate
//! limits). Handlers take a `Principal` and call `require(scope)`; nothing else reads the header.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::config::Tenancy;
use crate::keys::{self, KeyKind, Principal, Rejected, Scope};
use crate::tenants;

use super::error::{Error, Result};
use super::rate_limit;

/// The tenant named by an optional `/t/{slug}` URL prefix (set by [`super::tenant_prefix`]).
#[derive(Clone, Debug)]
pub struct TenantPrefix(pub String);

impl Principal {
    /// Fails with 403 `forbidden_scope` unless the key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(Error::ForbiddenScope(scope.as_str()))
        }
    }

    /// Fails with 403 `forbidden_scope` unless this is an admin key.
    pub fn require_admin(&self) -> Result<()> {
        if self.kind == KeyKind::Admin {
            Ok(())
        } else {
            Err(Error::ForbiddenScope("admin"))
        }
    }

    /// Fails with 403 `forbidden_scope` unless this key may operate the whole hub: an admin key
    /// of the default tenant (in single-tenant mode every admin key is one).
    pub fn require_operator(&self, tenancy: Tenancy) -> Result<()> {
        self.require_admin()?;
        if tenancy == Tenancy::Single || self.tenant_slug == tenants::DEFAULT_SLUG {
            Ok(())
        } else {
            Err(Error::ForbiddenScope("operator"))
        }
    }
}

/// How a request's `Authorization` header was settled, once per request, by [`authenticate`].
#[derive(Clone, Debug)]
struct Authenticated(Result<Principal, Refusal>);

/// Why a request has no principal.
#[derive(Clone, Debug)]
enum Refusal {
    Missing,
    Unknown,
    Revoked,
    PartnerRevoked,
    /// A valid key under `/t/{slug}` of another tenant.
    OtherTenant(String),
    /// The key could not be looked up.
    Unavailable,
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Missing | Refusal::Unknown => Error::Unauthorized,
            Refusal::Revoked => Error::RevokedKey,
            Refusal::PartnerRevoked => Error::Forbidden {
                code: "partner_revoked",
                detail: "this key's partner is revoked".to_owned(),
            },
            Refusal::OtherTenant(slug) => Error::NotFound {
                code: "tenant_not_found",
                detail: format!("no tenant {slug:?} for this key"),
            },
            Refusal::Unavailable => Error::Unavailable,
        }
    }
}

/// Routes that never take a key (documented with `security: []`, as is the API browser under
/// `/docs` and its `/openapi.json`): they are limited per client
/// address whatever they are sent, and no key is looked up for them, so a health check does not
/// wait on the database through an `Authorization` header.
const PUBLIC: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/sdk.js",
    "/v1/stripe/webhook",
];

/// Public routes by prefix: the API browser, and the onboarding links Stripe sends partners
/// back to (their token is the credential).
const PUBLIC_PREFIXES: [&str; 2] = ["/docs", "/v1/payout-onboarding/"];

/// Middleware in front of every API route: authenticates the presented key, if any, and applies
/// the rate limit — the key's own bucket for a valid key, the client address's for everything
/// else (no header, a malformed, unknown or revoked key), whatever the route and whatever other
/// headers the request carries. Guessing keys is therefore as slow as any anonymous traffic.
/// The outcome is kept for the [`Principal`] extractor, so a key is looked up once per request.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let outcome = if PUBLIC.contains(&path) || PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
        Err(Refusal::Missing)
    } else {
        settle(&state, request.headers(), request.extensions()).await
    };
    let limited = match &outcome {
        Ok(principal) => state.limits.check_key(&principal.key_id),
        Err(_) => rate_limit::check_ip(&state, &request),
    };
    if let Err(limited) = limited {
        return limited.into_response();
    }
    request.extensions_mut().insert(Authenticated(outcome));
    next.run(request).await
}

async fn settle(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> std::result::Result<Principal, Refusal> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Refusal::Missing)?;
    let principal = match keys::authenticate(&state.db, &state.clock, presented).await {
        Ok(Ok(principal)) => principal,
        Ok(Err(Rejected::Unknown)) => return Err(Refusal::Unknown),
        Ok(Err(Rejected::Revoked)) => return Err(Refusal::Revoked),
        Ok(Err(Rejected::PartnerRevoked)) => return Err(Refusal::PartnerRevoked),
        Err(err) => {
            tracing::error!(error = %err, "an API key could not be looked up");
            return Err(Refusal::Unavailable);
        }
    };
    match extensions.get::<TenantPrefix>() {
        Some(TenantPrefix(slug)) if *slug != principal.tenant_slug => {
            Err(Refusal::OtherTenant(slug.clone()))
        }
        _ => Ok(principal),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    /// The caller as [`authenticate`] settled it.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(Ok(principal))) => Ok(principal.clone()),
            Some(Authenticated(Err(refusal))) => Err(refusal.clone().into()),
            None => Err(Error::Unauthorized),
        }
    }
}
