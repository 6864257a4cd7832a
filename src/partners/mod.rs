//! Partners: the people and companies who promote a tenant's product.
//!
//! A partner is created active (directly, or from the Network), is known by a unique e-mail per
//! tenant, gets identity-graph entries for its e-mail and phone, may be revoked (its keys stop
//! working at once, its links keep redirecting but its clicks are never attributed) and
//! reinstated. Revocations and reinstatements are kept as history, never deleted.

pub mod routes;
pub mod store;

use crate::db::Tx;
use crate::http::error::{Error, Result};
use crate::keys::{KeyKind, Principal, Scope};

pub use store::StoredPartner;

/// Who may act on partner `partner_id`: admin keys; scoped keys holding `scope` (`None`: no
/// scoped key); and, when `own` is true, that partner's own key.
pub fn authorize(
    principal: &Principal,
    scope: Option<Scope>,
    own: bool,
    partner_id: &str,
) -> Result<()> {
    match principal.kind {
        KeyKind::Admin => Ok(()),
        KeyKind::Partner if own && principal.partner_id.as_deref() == Some(partner_id) => Ok(()),
        KeyKind::Partner if own => Err(Error::Forbidden {
            code: "forbidden_partner",
            detail: "a partner key acts only on its own partner".to_owned(),
        }),
        _ => match scope {
            Some(scope) => principal.require(scope),
            None => principal.require_admin(),
        },
    }
}

/// The tenant's partner `id`, or 404 `partner_not_found`.
pub async fn existing(tx: &mut Tx, tenant: &str, id: &str) -> Result<StoredPartner> {
    store::find(tx, tenant, id)
        .await?
        .ok_or_else(|| Error::NotFound {
            code: "partner_not_found",
            detail: format!("no partner {id}"),
        })
}
