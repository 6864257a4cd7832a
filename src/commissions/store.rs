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
    /// The payout it is bound to (pending or paid), if any.
    pub payout_id: Option<String>,
    pub matures_at: i64,
    pub approved_at: Option<i64>,
    pub reversed_at: Option<i64>,
    pub refunded_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, partner_id, campaign_id, conversion_id, click_id, event_id, \
    order_id, transaction_id, amount, reversed_amount, currency, status, matures_at, approved_at, \
    reversed_at, refunded_at, created_at, updated_at, payout_id";

pub async fn insert(tx: &mut Tx, c: &StoredCommission) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO commissions ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20)"
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
        .bind(&c.payout_id)
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

/// Approves a commission that is still pending; returns whether it was.
pub async fn approve(tx: &mut Tx, c: &StoredCommission, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE commissions SET status = 'approved', approved_at = $1, updated_at = $1
         WHERE tenant_id = $2 AND id = $3 AND status = 'pending'",
    )
    .bind(now)
    .bind(&c.tenant_id)
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
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

/// A partner's approved commissions in one currency that no payout holds yet.
#[derive(Debug, sqlx::FromRow)]
pub struct Payable {
    pub partner_id: String,
    pub currency: String,
    /// What they pay: the sum of `amount - reversed_amount`.
    pub amount: i64,
    pub count: i64,
}

/// Every partner's payable total per currency, by partner id.
pub async fn payable(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Vec<Payable>> {
    sqlx::query_as(
        "SELECT partner_id, currency, CAST(SUM(amount - reversed_amount) AS BIGINT) AS amount,
                COUNT(*) AS count
         FROM commissions
         WHERE tenant_id = $1 AND status = 'approved' AND payout_id IS NULL
         GROUP BY partner_id, currency
         ORDER BY partner_id, currency",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await
}

/// Binds the partner's payable commissions in `currency` to `payout_id`; returns what each
/// pays. The condition is re-checked on the rows themselves (PostgreSQL re-reads a row another
/// transaction changed), so a commission another run bound or a refund reversed meanwhile is
/// left out, and the sum of the answer is exactly what was bound.
pub async fn bind(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    currency: &str,
    payout_id: &str,
    now: i64,
) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "UPDATE commissions SET payout_id = $1, updated_at = $2
         WHERE tenant_id = $3 AND partner_id = $4 AND currency = $5 AND status = 'approved'
           AND payout_id IS NULL
         RETURNING amount - reversed_amount",
    )
    .bind(payout_id)
    .bind(now)
    .bind(tenant_id)
    .bind(partner_id)
    .bind(currency)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(net,)| net).collect())
}

/// Marks the commissions bound to `payout_id` paid; returns their ids.
pub async fn settle(
    tx: &mut Tx,
    tenant_id: &str,
    payout_id: &str,
    now: i64,
) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "UPDATE commissions SET status = 'paid', updated_at = $1
         WHERE tenant_id = $2 AND payout_id = $3
         RETURNING id",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(payout_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
    ids.sort();
    Ok(ids)
}

/// Frees the commissions bound to `payout_id` (it failed or was reversed): approved again, in
/// no payout, for the next run.
pub async fn release(tx: &mut Tx, tenant_id: &str, payout_id: &str, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE commissions SET status = 'approved', payout_id = NULL, updated_at = $1
         WHERE tenant_id = $2 AND payout_id = $3",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(payout_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// The commissions bound to `payout_id`.
pub async fn of_payout(
    tx: &mut Tx,
    tenant_id: &str,
    payout_id: &str,
) -> sqlx::Result<Vec<StoredCommission>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM commissions WHERE tenant_id = $1 AND payout_id = $2 ORDER BY id"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(payout_id)
        .fetch_all(&mut **tx)
        .await
}

/// A partner's commissions summed per currency and state.
#[derive(Debug, sqlx::FromRow)]
pub struct Totals {
    pub currency: String,
    pub status: String,
    /// Whether a payout holds them (a pending one, for approved commissions).
    pub in_payout: i64,
    pub amount: i64,
    pub reversed_amount: i64,
}

pub async fn totals(tx: &mut Tx, tenant_id: &str, partner_id: &str) -> sqlx::Result<Vec<Totals>> {
    sqlx::query_as(
        "SELECT currency, status,
                CASE WHEN payout_id IS NULL THEN 0 ELSE 1 END AS in_payout,
                CAST(SUM(amount) AS BIGINT) AS amount,
                CAST(SUM(reversed_amount) AS BIGINT) AS reversed_amount
         FROM commissions
         WHERE tenant_id = $1 AND partner_id = $2
         GROUP BY currency, status, CASE WHEN payout_id IS NULL THEN 0 ELSE 1 END
         ORDER BY currency, status",
    )
    .bind(tenant_id)
    .bind(partner_id)
    .fetch_all(&mut **tx)
    .await
}
