//! The `Principal` extractor: `Authorization: Bearer <key>` -> the calling key, its tenant and
//! its scopes. Handlers take a `Principal` and call `require(scope)`; nothing else reads the
//! header.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::config::Tenancy;
use crate::keys::{self, KeyKind, Principal, Rejected, Scope};
use crate::tenants;

use super::error::{Error, Result};

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

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        // Already authenticated by the `Idempotency-Key` middleware.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let outcome = match presented {
            Some(key) => keys::authenticate(&state.db, &state.clock, key).await?,
            None => Err(Rejected::Unknown),
        };
        let principal = match outcome {
            Ok(principal) => principal,
            Err(rejected) => {
                // Failed attempts count against the client's address, so guessing keys is as
                // slow as any other unauthenticated traffic.
                if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
                    state.limits.check_ip(addr.ip())?;
                }
                return Err(match rejected {
                    Rejected::Unknown => Error::Unauthorized,
                    Rejected::Revoked => Error::RevokedKey,
                    Rejected::PartnerRevoked => Error::Forbidden {
                        code: "partner_revoked",
                        detail: "this key's partner is revoked".to_owned(),
                    },
                });
            }
        };
        if let Some(TenantPrefix(slug)) = parts.extensions.get::<TenantPrefix>() {
            if *slug != principal.tenant_slug {
                return Err(Error::NotFound {
                    code: "tenant_not_found",
                    detail: format!("no tenant {slug:?} for this key"),
                });
            }
        }
        state.limits.check_key(&principal.key_id)?;
        Ok(principal)
    }
}
