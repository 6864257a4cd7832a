//! SQL for the `commissions` table.

use crate::db::Tx;
use crate::http::pagination::Page;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredCommission {
    pub id: String,
    pub tenant_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub conversion_id: String,
    pub click_id: String,
    pub event_id: String,
    pub order_id: String,
    pub transaction_id: String,
    pub amount: i64,
    /// What partial refunds took back so far (minor units): it pays `amount - reversed_amount`.
    pub reversed_amount: i64,
    pub currency: String,
    pub status: String,
    pub matures_at: i64,
    pub approved_at: Option<i64>,
    pub reversed_at: Option<i64>,
    pub refunded_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, partner_id, campaign_id, conversion_id, click_id, event_id, \
    order_id, transaction_id, amount, reversed_amount, currency, status, matures_at, approved_at, \
    reversed_at, refunded_at, created_at, updated_at";

pub async fn insert(tx: &mut Tx, c: &StoredCommission) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO commissions ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19)"
    );
    sqlx::query(&sql)
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.partner_id)
        .bind(&c.campaign_id)
        .bind(&c.conversion_id)
        .bind(&c.click_id)
        .bind(&c.event_id)
        .bind(&c.order_id)
        .bind(&c.transaction_id)
        .bind(c.amount)
        .bind(c.reversed_amount)
        .bind(&c.currency)
        .bind(&c.status)
        .bind(c.matures_at)
        .bind(c.approved_at)
        .bind(c.reversed_at)
        .bind(c.refunded_at)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Saves a commission's status, what partial refunds took back, and its times.
pub async fn update_status(tx: &mut Tx, c: &StoredCommission) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE commissions SET status = $1, approved_at = $2, reversed_at = $3, refunded_at = $4,
            updated_at = $5, reversed_amount = $8
         WHERE tenant_id = $6 AND id = $7",
    )
    .bind(&c.status)
    .bind(c.approved_at)
    .bind(c.reversed_at)
    .bind(c.refunded_at)
    .bind(c.updated_at)
    .bind(&c.tenant_id)
    .bind(&c.id)
    .bind(c.reversed_amount)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredCommission>> {
    let sql = format!("SELECT {COLUMNS} FROM commissions WHERE tenant_id = $1 AND id = $2");
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

/// Locks the commissions of this order until the transaction ends (a no-op UPDATE: PostgreSQL
/// takes the rows' locks, SQLite's write transaction is the lock), so concurrent refunds of it
/// apply one after the other.
pub async fn lock_order(tx: &mut Tx, tenant_id: &str, order_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE commissions SET updated_at = updated_at WHERE tenant_id = $1 AND order_id = $2",
    )
    .bind(tenant_id)
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The commissions earned by conversions of this order.
pub async fn of_order(
    tx: &mut Tx,
    tenant_id: &str,
    order_id: &str,
) -> sqlx::Result<Vec<StoredCommission>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM commissions WHERE tenant_id = $1 AND order_id = $2 ORDER BY id"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(order_id)
        .fetch_all(&mut **tx)
        .await
}

/// Pending commissions whose holdback has passed, oldest first.
pub async fn matured(
    tx: &mut Tx,
    tenant_id: &str,
    now: i64,
    limit: i64,
) -> sqlx::Result<Vec<StoredCommission>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM commissions
         WHERE tenant_id = $1 AND status = 'pending' AND matures_at <= $2
         ORDER BY matures_at, id
         LIMIT $3"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}

/// One page of the tenant's commissions, newest first, by partner and status when given.
pub async fn list(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: Option<&str>,
    status: Option<&str>,
    page: &Page,
) -> sqlx::Result<Vec<StoredCommission>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM commissions
         WHERE tenant_id = $1 AND ($2 = '' OR partner_id = $2) AND ($3 = '' OR status = $3)
           AND (created_at < $4 OR (created_at = $4 AND id < $5))
         ORDER BY created_at DESC, id DESC
         LIMIT $6"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(partner_id.unwrap_or_default())
        .bind(status.unwrap_or_default())
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}
