//! API keys: who may call the API, for which tenant, with which scopes.
//!
//! A key is `sy_<prefix>_<secret>`. The prefix is public (it identifies the key in lists and
//! logs); the database stores it beside the SHA-256 of the whole key, never the key itself, and
//! a presented key is compared with that hash in constant time. The plaintext is shown once, when
//! the key is created.
//!
//! Three kinds: `admin` keys hold every scope and may manage keys; `scoped` keys hold the scopes
//! they were minted with; `partner` keys act as one partner (the routes that partners may use
//! check the bound partner, not a scope).

pub mod routes;
mod store;

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::clock::{rfc3339, Clock};
use crate::db::{Db, Tx, KEY_PREFIX_SETTING, TENANT_SETTING};
use crate::ids;

pub use store::StoredKey;

const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 32;
/// `last_used_at` is refreshed at most this often, so authentication is not a write per request.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// A permission a scoped key can hold (DESIGN.md section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "partners:read")]
    PartnersRead,
    #[serde(rename = "partners:write")]
    PartnersWrite,
    #[serde(rename = "commissions:read")]
    CommissionsRead,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "postbacks:write")]
    PostbacksWrite,
    #[serde(rename = "payouts:read")]
    PayoutsRead,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::EventsWrite,
        Scope::PartnersRead,
        Scope::PartnersWrite,
        Scope::CommissionsRead,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::PostbacksWrite,
        Scope::PayoutsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::PartnersRead => "partners:read",
            Scope::PartnersWrite => "partners:write",
            Scope::CommissionsRead => "commissions:read",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::PostbacksWrite => "postbacks:write",
            Scope::PayoutsRead => "payouts:read",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn split(stored: &str) -> Vec<Scope> {
        stored.split_whitespace().filter_map(Scope::parse).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Admin,
    Scoped,
    Partner,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::Scoped => "scoped",
            KeyKind::Partner => "partner",
        }
    }

    pub fn parse(name: &str) -> Option<KeyKind> {
        [KeyKind::Admin, KeyKind::Scoped, KeyKind::Partner]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// What to mint: the kind and, for scoped keys, the scopes; for partner keys, the partner.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub name: String,
    pub kind: KeyKind,
    pub scopes: Vec<Scope>,
    pub partner_id: Option<String>,
}

/// An API key as the API shows it: never the secret.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub kind: KeyKind,
    /// Scopes the key holds; admin keys hold all.
    pub scopes: Vec<Scope>,
    pub partner_id: Option<String>,
    /// The public start of the key (`sy_<prefix>`), to recognise it.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A key just minted: its representation and the plaintext, which is never shown again.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The full key. Store it now: Switchyard keeps only its hash.
    #[serde(rename = "key")]
    pub plaintext: String,
}

/// The caller of an authenticated request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant_id: String,
    pub tenant_slug: String,
    pub key_id: String,
    pub kind: KeyKind,
    pub scopes: Vec<Scope>,
    pub partner_id: Option<String>,
}

impl Principal {
    /// Admin keys hold every scope; scoped keys the ones they were minted with; partner keys none.
    pub fn has(&self, scope: Scope) -> bool {
        self.kind == KeyKind::Admin || self.scopes.contains(&scope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Validates `new` (scopes only on scoped keys, a partner only on partner keys) and mints it.
pub async fn issue(
    tx: &mut Tx,
    clock: &Clock,
    tenant_id: &str,
    new: NewKey,
) -> Result<IssuedKey, KeyError> {
    if new.kind != KeyKind::Scoped && !new.scopes.is_empty() {
        return Err(invalid(
            "scopes",
            "only scoped keys take scopes: admin keys hold all, partner keys none",
        ));
    }
    let scopes = match new.kind {
        KeyKind::Admin => Scope::ALL.to_vec(),
        KeyKind::Scoped if new.scopes.is_empty() => {
            return Err(invalid("scopes", "a scoped key needs at least one scope"))
        }
        KeyKind::Scoped => dedup(new.scopes),
        KeyKind::Partner => Vec::new(),
    };
    match (new.kind, &new.partner_id) {
        (KeyKind::Partner, None) => {
            return Err(invalid("partner_id", "a partner key needs partner_id"))
        }
        (KeyKind::Partner, Some(id)) if !ids::is_valid("ptr", id) => {
            return Err(invalid("partner_id", "must look like ptr_<ULID>"))
        }
        (KeyKind::Partner, Some(id)) => {
            match crate::partners::store::status(tx, tenant_id, id).await? {
                Some(status) if status == "active" => {}
                Some(_) => return Err(invalid("partner_id", "the partner is revoked")),
                None => return Err(invalid("partner_id", "the tenant has no such partner")),
            }
        }
        (KeyKind::Admin | KeyKind::Scoped, Some(_)) => {
            return Err(invalid(
                "partner_id",
                "only partner keys are bound to a partner",
            ))
        }
        _ => {}
    }
    let prefix = Alphanumeric.sample_string(&mut rand::rng(), PREFIX_LEN);
    let secret = Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN);
    let plaintext = format!("sy_{prefix}_{secret}");
    let stored = StoredKey {
        id: ids::new("key"),
        tenant_id: tenant_id.to_owned(),
        name: new.name,
        kind: new.kind.as_str().to_owned(),
        scopes: Scope::join(&scopes),
        partner_id: new.partner_id,
        prefix,
        secret_hash: hash(&plaintext),
        created_at: clock.now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    store::insert(tx, &stored).await?;
    Ok(IssuedKey {
        key: stored.into(),
        plaintext,
    })
}

fn invalid(field: &'static str, message: &'static str) -> KeyError {
    KeyError::Invalid { field, message }
}

fn dedup(mut scopes: Vec<Scope>) -> Vec<Scope> {
    let mut seen = Vec::with_capacity(scopes.len());
    scopes.retain(|s| {
        let fresh = !seen.contains(s);
        seen.push(*s);
        fresh
    });
    scopes
}

/// Why a presented key was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    Unknown,
    Revoked,
    /// A partner key whose partner is revoked: it works again if the partner is reinstated.
    PartnerRevoked,
}

/// Checks a presented key. Looks the key up by its public prefix (on PostgreSQL the RLS policy
/// lets this transaction see that one row), compares hashes in constant time, and refreshes
/// `last_used_at` when it is older than a minute.
pub async fn authenticate(
    db: &Db,
    clock: &Clock,
    presented: &str,
) -> Result<Result<Principal, Rejected>, sqlx::Error> {
    let Some(prefix) = parse_prefix(presented) else {
        return Ok(Err(Rejected::Unknown));
    };
    let mut tx = db.pool().begin().await?;
    db.set_local(&mut tx, KEY_PREFIX_SETTING, prefix).await?;
    let Some((key, tenant_slug)) = store::find_by_prefix(&mut tx, prefix).await? else {
        return Ok(Err(Rejected::Unknown));
    };
    let matches: bool = hash(presented)
        .as_bytes()
        .ct_eq(key.secret_hash.as_bytes())
        .into();
    if !matches {
        return Ok(Err(Rejected::Unknown));
    }
    if key.revoked_at.is_some() {
        return Ok(Err(Rejected::Revoked));
    }
    if let Some(partner_id) = &key.partner_id {
        db.set_local(&mut tx, TENANT_SETTING, &key.tenant_id)
            .await?;
        let status = crate::partners::store::status(&mut tx, &key.tenant_id, partner_id).await?;
        if status.as_deref() != Some("active") {
            return Ok(Err(Rejected::PartnerRevoked));
        }
    }
    let now = clock.now_ms();
    tx.commit().await?;
    // The lookup was a read; the touch is a write transaction of its own, because upgrading a
    // SQLite read transaction to a write fails at once if another writer committed meanwhile.
    if key
        .last_used_at
        .is_none_or(|at| now - at >= TOUCH_INTERVAL_MS)
    {
        let mut tx = db.write(&key.tenant_id).await?;
        store::touch(&mut tx, &key.id, now).await?;
        tx.commit().await?;
    }
    Ok(Ok(Principal {
        tenant_id: key.tenant_id,
        tenant_slug,
        key_id: key.id,
        kind: KeyKind::parse(&key.kind).unwrap_or(KeyKind::Partner),
        scopes: Scope::split(&key.scopes),
        partner_id: key.partner_id,
    }))
}

/// The public prefix of a well-formed key, `None` for anything else.
fn parse_prefix(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix("sy_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let well_formed = prefix.len() == PREFIX_LEN
        && secret.len() == SECRET_LEN
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    well_formed.then_some(prefix)
}

fn hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

pub use store::{list, lock_active_admins, revoke};

impl From<StoredKey> for ApiKey {
    fn from(k: StoredKey) -> Self {
        ApiKey {
            kind: KeyKind::parse(&k.kind).unwrap_or(KeyKind::Partner),
            scopes: Scope::split(&k.scopes),
            prefix: format!("sy_{}", k.prefix),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            id: k.id,
            name: k.name,
            partner_id: k.partner_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_reach_the_database() {
        let key = format!("sy_{}_{}", "a".repeat(12), "B".repeat(32));
        assert_eq!(parse_prefix(&key), Some("aaaaaaaaaaaa"));
        assert_eq!(parse_prefix("sy_short_secret"), None);
        assert_eq!(parse_prefix(&key.replace("sy_", "sk_")), None);
        assert_eq!(parse_prefix(&format!("{key}'--")), None);
    }

    #[test]
    fn scopes_round_trip_through_storage() {
        let scopes = vec![Scope::WebhooksWrite, Scope::EventsWrite];
        assert_eq!(Scope::split(&Scope::join(&scopes)), scopes);
        assert_eq!(Scope::parse("webhooks:write"), Some(Scope::WebhooksWrite));
        assert_eq!(Scope::parse("webhooks:admin"), None);
    }

    #[test]
    fn duplicate_scopes_collapse() {
        assert_eq!(
            dedup(vec![
                Scope::EventsWrite,
                Scope::EventsWrite,
                Scope::PartnersRead
            ]),
            vec![Scope::EventsWrite, Scope::PartnersRead]
        );
    }
}
