//! SQL for the `network_connections` table.

use crate::db::Tx;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredConnection {
    pub tenant_id: String,
    pub network_url: String,
    pub contact_email: String,
    pub display_name: String,
    pub status: String,
    pub signup_id: Option<String>,
    pub vendor_id: Option<String>,
    pub vendor_token_sealed: Option<String>,
    pub federation_key_id: String,
    pub auto_enroll: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub payouts_reported_until: i64,
    pub payouts_pending_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "tenant_id, network_url, contact_email, display_name, status, signup_id, \
    vendor_id, vendor_token_sealed, federation_key_id, auto_enroll, last_error, last_error_at, \
    payouts_reported_until, payouts_pending_until, created_at, updated_at";

pub async fn find(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Option<StoredConnection>> {
    let sql = format!("SELECT {COLUMNS} FROM network_connections WHERE tenant_id = $1");
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await
}

/// The connection, its row locked until the transaction ends (see `payouts::store::lock_payout`).
pub async fn lock(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Option<StoredConnection>> {
    sqlx::query("UPDATE network_connections SET updated_at = updated_at WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    find(tx, tenant_id).await
}

/// Records the Network's signup id, unless the connection changed meanwhile (another connect
/// replaced its federation key); returns whether it was recorded.
pub async fn set_signup(
    tx: &mut Tx,
    tenant_id: &str,
    federation_key_id: &str,
    signup_id: Option<&str>,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE network_connections SET signup_id = $1, updated_at = $2
         WHERE tenant_id = $3 AND federation_key_id = $4 AND status = 'pending'",
    )
    .bind(signup_id)
    .bind(now)
    .bind(tenant_id)
    .bind(federation_key_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Connects the pending connection of `federation_key_id` with the vendor's id and sealed
/// token; returns false when it is no longer that pending connection.
pub async fn complete(
    tx: &mut Tx,
    tenant_id: &str,
    federation_key_id: &str,
    vendor_id: &str,
    token_sealed: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE network_connections SET status = 'connected', vendor_id = $1,
             vendor_token_sealed = $2, last_error = NULL, updated_at = $3
         WHERE tenant_id = $4 AND federation_key_id = $5 AND status = 'pending'",
    )
    .bind(vendor_id)
    .bind(token_sealed)
    .bind(now)
    .bind(tenant_id)
    .bind(federation_key_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_auto_enroll(
    tx: &mut Tx,
    tenant_id: &str,
    auto_enroll: bool,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE network_connections SET auto_enroll = $1, updated_at = $2 WHERE tenant_id = $3",
    )
    .bind(i64::from(auto_enroll))
    .bind(now)
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps the end of the payouts window being reported.
pub async fn set_pending_until(tx: &mut Tx, tenant_id: &str, until: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE network_connections SET payouts_pending_until = $1 WHERE tenant_id = $2")
        .bind(until)
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the whole connection (a new one replaces the old).
pub async fn save(tx: &mut Tx, c: &StoredConnection) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO network_connections ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (tenant_id) DO UPDATE SET network_url = excluded.network_url,
             contact_email = excluded.contact_email, display_name = excluded.display_name,
             status = excluded.status, signup_id = excluded.signup_id,
             vendor_id = excluded.vendor_id, vendor_token_sealed = excluded.vendor_token_sealed,
             federation_key_id = excluded.federation_key_id,
             auto_enroll = excluded.auto_enroll, last_error = excluded.last_error,
             last_error_at = excluded.last_error_at,
             payouts_reported_until = excluded.payouts_reported_until,
             payouts_pending_until = excluded.payouts_pending_until,
             updated_at = excluded.updated_at"
    );
    sqlx::query(&sql)
        .bind(&c.tenant_id)
        .bind(&c.network_url)
        .bind(&c.contact_email)
        .bind(&c.display_name)
        .bind(&c.status)
        .bind(&c.signup_id)
        .bind(&c.vendor_id)
        .bind(&c.vendor_token_sealed)
        .bind(&c.federation_key_id)
        .bind(c.auto_enroll)
        .bind(&c.last_error)
        .bind(c.last_error_at)
        .bind(c.payouts_reported_until)
        .bind(c.payouts_pending_until)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn delete(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM network_connections WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records the last failure (`None`: clears it).
pub async fn set_error(
    tx: &mut Tx,
    tenant_id: &str,
    error: Option<&str>,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE network_connections SET last_error = $1,
             last_error_at = CASE WHEN $1 IS NULL THEN last_error_at ELSE $2 END
         WHERE tenant_id = $3",
    )
    .bind(error)
    .bind(now)
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Advances the payouts mark to `until`; the window is no longer pending.
pub async fn set_reported_until(tx: &mut Tx, tenant_id: &str, until: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE network_connections SET payouts_reported_until = $1, payouts_pending_until = NULL
         WHERE tenant_id = $2",
    )
    .bind(until)
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
