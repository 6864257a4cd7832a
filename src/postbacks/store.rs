//! SQL for the `postbacks` and `postback_fires` tables.

use crate::db::Tx;
use crate::http::pagination::Page;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredPostback {
    pub id: String,
    pub tenant_id: String,
    pub partner_id: String,
    pub url_template: String,
    /// Space-separated `commission.*` types; empty for all of them.
    pub event_types: String,
    pub enabled: i64,
    pub disabled_reason: Option<String>,
    pub success_count: i64,
    pub failure_count: i64,
    pub consecutive_failures: i64,
    pub last_status: Option<i64>,
    pub last_fired_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, partner_id, url_template, event_types, enabled, \
    disabled_reason, success_count, failure_count, consecutive_failures, last_status, \
    last_fired_at, created_at, updated_at";

pub async fn insert(tx: &mut Tx, p: &StoredPostback) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO postbacks ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    sqlx::query(&sql)
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.partner_id)
        .bind(&p.url_template)
        .bind(&p.event_types)
        .bind(p.enabled)
        .bind(&p.disabled_reason)
        .bind(p.success_count)
        .bind(p.failure_count)
        .bind(p.consecutive_failures)
        .bind(p.last_status)
        .bind(p.last_fired_at)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Saves the settings an owner may change (template, types, enabled).
pub async fn update(tx: &mut Tx, p: &StoredPostback) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE postbacks SET url_template = $1, event_types = $2, enabled = $3,
            disabled_reason = $4, consecutive_failures = $5, updated_at = $6
         WHERE tenant_id = $7 AND id = $8",
    )
    .bind(&p.url_template)
    .bind(&p.event_types)
    .bind(p.enabled)
    .bind(&p.disabled_reason)
    .bind(p.consecutive_failures)
    .bind(p.updated_at)
    .bind(&p.tenant_id)
    .bind(&p.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The partner's live postback `id`.
pub async fn find(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredPostback>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM postbacks
         WHERE tenant_id = $1 AND partner_id = $2 AND id = $3 AND deleted_at IS NULL"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(partner_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

pub async fn delete(tx: &mut Tx, tenant_id: &str, id: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE postbacks SET deleted_at = $1, enabled = 0 WHERE tenant_id = $2 AND id = $3",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One page of the partner's live postbacks, newest first.
pub async fn list(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    page: &Page,
) -> sqlx::Result<Vec<StoredPostback>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM postbacks
         WHERE tenant_id = $1 AND partner_id = $2 AND deleted_at IS NULL
           AND (created_at < $3 OR (created_at = $3 AND id < $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(partner_id)
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

/// The partner's enabled postbacks subscribed to `event_type`.
pub async fn subscribed(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    event_type: &str,
    by_default: bool,
) -> sqlx::Result<Vec<StoredPostback>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM postbacks
         WHERE tenant_id = $1 AND partner_id = $2 AND enabled = 1 AND deleted_at IS NULL
           AND ((event_types = '' AND $4 = 1)
                OR (' ' || event_types || ' ') LIKE ('% ' || $3 || ' %'))
         ORDER BY id"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(partner_id)
        .bind(event_type)
        .bind(i64::from(by_default))
        .fetch_all(&mut **tx)
        .await
}

/// Every live postback's counters (for `/metrics`).
pub async fn counters(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Vec<StoredPostback>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM postbacks WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await
}

/// Creates the fire of `message_id` to `postback_id` unless it exists. Returns true when new.
pub async fn insert_fire(
    tx: &mut Tx,
    id: &str,
    tenant_id: &str,
    postback_id: &str,
    message_id: &str,
    url: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO postback_fires (id, tenant_id, postback_id, message_id, url, status, attempts,
                                     created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)
         ON CONFLICT (message_id, postback_id) DO NOTHING",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(postback_id)
    .bind(message_id)
    .bind(url)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Fire {
    pub id: String,
    pub postback_id: String,
    pub partner_id: String,
    pub url: String,
    pub status: String,
    pub enabled: i64,
}

/// A fire with its postback's partner and whether the postback is still enabled.
pub async fn find_fire(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<Option<Fire>> {
    sqlx::query_as(
        "SELECT f.id, f.postback_id, p.partner_id, f.url, f.status, p.enabled
         FROM postback_fires f JOIN postbacks p ON p.id = f.postback_id AND p.tenant_id = f.tenant_id
         WHERE f.tenant_id = $1 AND f.id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

/// What one attempt of a fire came to.
#[derive(Clone, Copy, Debug)]
pub struct Attempted<'a> {
    /// The fire's state after it: `succeeded`, `pending` (a retry follows) or `failed`.
    pub fire_status: &'a str,
    /// The tracker's HTTP status (none when it gave no answer).
    pub http_status: Option<i64>,
    pub succeeded: bool,
}

/// Records an attempt of a fire: its state after it, and the postback's counters. Disables
/// the postback at `disable_after` consecutive failures. Returns true when it disabled it.
pub async fn record_attempt(
    tx: &mut Tx,
    tenant_id: &str,
    fire: &Fire,
    attempted: &Attempted<'_>,
    disable_after: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let Attempted {
        fire_status,
        http_status,
        succeeded,
    } = *attempted;
    sqlx::query(
        "UPDATE postback_fires SET status = $1, attempts = attempts + 1, last_status = $2,
            updated_at = $3
         WHERE tenant_id = $4 AND id = $5",
    )
    .bind(fire_status)
    .bind(http_status)
    .bind(now)
    .bind(tenant_id)
    .bind(&fire.id)
    .execute(&mut **tx)
    .await?;
    let (success, failure) = if succeeded { (1, 0) } else { (0, 1) };
    sqlx::query(
        "UPDATE postbacks SET success_count = success_count + $1, failure_count = failure_count + $2,
            consecutive_failures = CASE WHEN $1 = 1 THEN 0 ELSE consecutive_failures + 1 END,
            last_status = $3, last_fired_at = $4, updated_at = $4
         WHERE tenant_id = $5 AND id = $6",
    )
    .bind(success)
    .bind(failure)
    .bind(http_status)
    .bind(now)
    .bind(tenant_id)
    .bind(&fire.postback_id)
    .execute(&mut **tx)
    .await?;
    let disabled = sqlx::query(
        "UPDATE postbacks SET enabled = 0, disabled_reason = $1
         WHERE tenant_id = $2 AND id = $3 AND enabled = 1 AND consecutive_failures >= $4",
    )
    .bind(format!("{disable_after} consecutive failures"))
    .bind(tenant_id)
    .bind(&fire.postback_id)
    .bind(disable_after)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(disabled == 1)
}
