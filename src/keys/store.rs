//! SQL for the `api_keys` table.

use crate::db::Tx;
use crate::http::pagination::Page;

use super::Scope;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub kind: String,
    pub scopes: String,
    pub partner_id: Option<String>,
    pub prefix: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, name, kind, scopes, partner_id, prefix, secret_hash, \
                       created_at, last_used_at, revoked_at";

pub(super) async fn insert(tx: &mut Tx, key: &StoredKey) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, kind, scopes, partner_id, prefix, secret_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&key.id)
    .bind(&key.tenant_id)
    .bind(&key.name)
    .bind(&key.kind)
    .bind(&key.scopes)
    .bind(&key.partner_id)
    .bind(&key.prefix)
    .bind(&key.secret_hash)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The key with this public prefix and its tenant's slug.
pub(super) async fn find_by_prefix(
    tx: &mut Tx,
    prefix: &str,
) -> sqlx::Result<Option<(StoredKey, String)>> {
    let sql = format!(
        "SELECT k.{}, t.slug AS tenant_slug FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.prefix = $1",
        COLUMNS.replace(", ", ", k.")
    );
    let found = sqlx::query_as::<_, StoredKeyWithSlug>(&sql)
        .bind(prefix)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(found.map(|f| (f.key, f.tenant_slug)))
}

#[derive(sqlx::FromRow)]
struct StoredKeyWithSlug {
    #[sqlx(flatten)]
    key: StoredKey,
    tenant_slug: String,
}

pub(super) async fn touch(tx: &mut Tx, id: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One page of a tenant's keys, newest first; with `scope`, only keys that hold it (admin keys
/// hold every scope).
pub async fn list(
    tx: &mut Tx,
    tenant_id: &str,
    scope: Option<Scope>,
    page: &Page,
) -> sqlx::Result<Vec<StoredKey>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys
         WHERE tenant_id = $1
           AND ($2 = '' OR kind = 'admin' OR (' ' || scopes || ' ') LIKE ('% ' || $2 || ' %'))
           AND (created_at < $3 OR (created_at = $3 AND id < $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(scope.map(Scope::as_str).unwrap_or_default())
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

/// Locks the tenant's active admin keys until the transaction ends (a no-op UPDATE:
/// PostgreSQL's row locks, inside SQLite's write transaction) and returns their ids, so two
/// revocations at once count each other.
pub async fn lock_active_admins(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = revoked_at
         WHERE tenant_id = $1 AND kind = 'admin' AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND kind = 'admin' AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Revokes a key of this tenant. Returns false when the tenant has no such key; revoking a
/// revoked key keeps its first revocation time.
pub async fn revoke(tx: &mut Tx, tenant_id: &str, id: &str, now: i64) -> sqlx::Result<bool> {
    let found = sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(found == 1)
}
