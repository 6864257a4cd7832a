//! SQL for the `payout_settings`, `payout_accounts`, `payout_runs`, `payouts` and
//! `payout_adjustments` tables.

use crate::db::Tx;
use crate::http::pagination::Page;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredSettings {
    pub method: String,
    pub payout_minimum: i64,
    pub clawback_paid_refunds: i64,
    pub onboarding_return_url: Option<String>,
    pub updated_at: i64,
}

pub async fn settings(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Option<StoredSettings>> {
    sqlx::query_as(
        "SELECT method, payout_minimum, clawback_paid_refunds, onboarding_return_url, updated_at
         FROM payout_settings WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn save_settings(tx: &mut Tx, tenant_id: &str, s: &StoredSettings) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payout_settings (tenant_id, method, payout_minimum, clawback_paid_refunds,
             onboarding_return_url, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id) DO UPDATE SET method = excluded.method,
             payout_minimum = excluded.payout_minimum,
             clawback_paid_refunds = excluded.clawback_paid_refunds,
             onboarding_return_url = excluded.onboarding_return_url,
             updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(&s.method)
    .bind(s.payout_minimum)
    .bind(s.clawback_paid_refunds)
    .bind(&s.onboarding_return_url)
    .bind(s.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredAccount {
    pub tenant_id: String,
    pub partner_id: String,
    pub stripe_account_id: String,
    pub status: String,
    /// A JSON array of requirement names.
    pub currently_due: String,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const ACCOUNT_COLUMNS: &str = "tenant_id, partner_id, stripe_account_id, status, currently_due, \
    disabled_reason, created_at, updated_at";

pub async fn account(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
) -> sqlx::Result<Option<StoredAccount>> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM payout_accounts WHERE tenant_id = $1 AND partner_id = $2"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(partner_id)
        .fetch_optional(&mut **tx)
        .await
}

/// The partners whose accounts are ready for transfers, with their accounts.
pub async fn ready_partners(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT partner_id, stripe_account_id FROM payout_accounts
         WHERE tenant_id = $1 AND status = 'ready'",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await
}

/// Stores a partner's account the first time; a second creation (a race, a retry) keeps the
/// first row. Returns the stored row.
pub async fn insert_account(tx: &mut Tx, a: &StoredAccount) -> sqlx::Result<StoredAccount> {
    sqlx::query(
        "INSERT INTO payout_accounts (tenant_id, partner_id, stripe_account_id, status,
             currently_due, disabled_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, partner_id) DO NOTHING",
    )
    .bind(&a.tenant_id)
    .bind(&a.partner_id)
    .bind(&a.stripe_account_id)
    .bind(&a.status)
    .bind(&a.currently_due)
    .bind(&a.disabled_reason)
    .bind(a.created_at)
    .bind(a.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(account(tx, &a.tenant_id, &a.partner_id)
        .await?
        .expect("the row was just written"))
}

/// Updates the readiness of the account `stripe_account_id`; returns whether it is one of ours.
pub async fn update_account(
    tx: &mut Tx,
    tenant_id: &str,
    stripe_account_id: &str,
    status: &str,
    currently_due: &str,
    disabled_reason: Option<&str>,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE payout_accounts SET status = $1, currently_due = $2, disabled_reason = $3,
             updated_at = $4
         WHERE tenant_id = $5 AND stripe_account_id = $6",
    )
    .bind(status)
    .bind(currently_due)
    .bind(disabled_reason)
    .bind(now)
    .bind(tenant_id)
    .bind(stripe_account_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredRun {
    pub id: String,
    pub tenant_id: String,
    pub triggered_by: String,
    pub payout_count: i64,
    /// A JSON array of carried balances.
    pub carried: String,
    pub created_at: i64,
}

pub async fn insert_run(tx: &mut Tx, run: &StoredRun) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payout_runs (id, tenant_id, triggered_by, payout_count, carried, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&run.id)
    .bind(&run.tenant_id)
    .bind(&run.triggered_by)
    .bind(run.payout_count)
    .bind(&run.carried)
    .bind(run.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn finish_run(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    payout_count: i64,
    carried: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payout_runs SET payout_count = $1, carried = $2 WHERE tenant_id = $3 AND id = $4",
    )
    .bind(payout_count)
    .bind(carried)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find_run(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<Option<StoredRun>> {
    sqlx::query_as(
        "SELECT id, tenant_id, triggered_by, payout_count, carried, created_at FROM payout_runs
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn list_runs(tx: &mut Tx, tenant_id: &str, page: &Page) -> sqlx::Result<Vec<StoredRun>> {
    sqlx::query_as(
        "SELECT id, tenant_id, triggered_by, payout_count, carried, created_at FROM payout_runs
         WHERE tenant_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3))
         ORDER BY created_at DESC, id DESC
         LIMIT $4",
    )
    .bind(tenant_id)
    .bind(page.after.0)
    .bind(&page.after.1)
    .bind(page.fetch())
    .fetch_all(&mut **tx)
    .await
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredPayout {
    pub id: String,
    pub tenant_id: String,
    pub run_id: String,
    pub partner_id: String,
    pub currency: String,
    pub amount: i64,
    pub commissions_amount: i64,
    pub clawed_back: i64,
    pub commission_count: i64,
    pub method: String,
    pub status: String,
    pub destination: Option<String>,
    pub transfer_id: Option<String>,
    pub reference: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// When the transfer was first asked of Stripe.
    pub transfer_requested_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub paid_at: Option<i64>,
}

const PAYOUT_COLUMNS: &str = "id, tenant_id, run_id, partner_id, currency, amount, \
    commissions_amount, clawed_back, commission_count, method, status, destination, transfer_id, \
    reference, failure_code, failure_message, created_at, updated_at, paid_at, \
    transfer_requested_at";

pub async fn insert_payout(tx: &mut Tx, p: &StoredPayout) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO payouts ({PAYOUT_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20)"
    );
    sqlx::query(&sql)
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.run_id)
        .bind(&p.partner_id)
        .bind(&p.currency)
        .bind(p.amount)
        .bind(p.commissions_amount)
        .bind(p.clawed_back)
        .bind(p.commission_count)
        .bind(&p.method)
        .bind(&p.status)
        .bind(&p.destination)
        .bind(&p.transfer_id)
        .bind(&p.reference)
        .bind(&p.failure_code)
        .bind(&p.failure_message)
        .bind(p.created_at)
        .bind(p.updated_at)
        .bind(p.paid_at)
        .bind(p.transfer_requested_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records that the payout's transfer is being asked of Stripe, once.
pub async fn mark_requested(tx: &mut Tx, tenant_id: &str, id: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payouts SET transfer_requested_at = $1
         WHERE tenant_id = $2 AND id = $3 AND transfer_requested_at IS NULL",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Saves a payout's outcome: its status, transfer or reference, failure, and times.
pub async fn save_outcome(tx: &mut Tx, p: &StoredPayout) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payouts SET status = $1, transfer_id = $2, reference = $3, failure_code = $4,
             failure_message = $5, updated_at = $6, paid_at = $7
         WHERE tenant_id = $8 AND id = $9",
    )
    .bind(&p.status)
    .bind(&p.transfer_id)
    .bind(&p.reference)
    .bind(&p.failure_code)
    .bind(&p.failure_message)
    .bind(p.updated_at)
    .bind(p.paid_at)
    .bind(&p.tenant_id)
    .bind(&p.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The payout, its row locked until the transaction ends (a no-op UPDATE first: PostgreSQL's
/// row lock, inside SQLite's write transaction), so two finishers of one payout apply one after
/// the other and the second sees the first's outcome.
pub async fn lock_payout(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredPayout>> {
    sqlx::query("UPDATE payouts SET updated_at = updated_at WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    find_payout(tx, tenant_id, id).await
}

pub async fn find_payout(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredPayout>> {
    let sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE tenant_id = $1 AND id = $2");
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

pub async fn payout_of_transfer(
    tx: &mut Tx,
    tenant_id: &str,
    transfer_id: &str,
) -> sqlx::Result<Option<String>> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM payouts WHERE tenant_id = $1 AND transfer_id = $2")
            .bind(tenant_id)
            .bind(transfer_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.map(|(id,)| id))
}

/// What a list of payouts is filtered by; empty strings match everything.
#[derive(Default)]
pub struct PayoutFilter<'a> {
    pub partner_id: &'a str,
    pub status: &'a str,
    pub run_id: &'a str,
}

pub async fn list_payouts(
    tx: &mut Tx,
    tenant_id: &str,
    filter: &PayoutFilter<'_>,
    page: &Page,
) -> sqlx::Result<Vec<StoredPayout>> {
    let sql = format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts
         WHERE tenant_id = $1 AND ($2 = '' OR partner_id = $2) AND ($3 = '' OR status = $3)
           AND ($4 = '' OR run_id = $4)
           AND (created_at < $5 OR (created_at = $5 AND id < $6))
         ORDER BY created_at DESC, id DESC
         LIMIT $7"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(filter.partner_id)
        .bind(filter.status)
        .bind(filter.run_id)
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

/// Every payout of a run, oldest first (the CSV export).
pub async fn payouts_of_run(
    tx: &mut Tx,
    tenant_id: &str,
    run_id: &str,
) -> sqlx::Result<Vec<StoredPayout>> {
    let sql = format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE tenant_id = $1 AND run_id = $2
         ORDER BY partner_id, currency"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(run_id)
        .fetch_all(&mut **tx)
        .await
}

/// A partner's payouts summed per currency and status.
pub async fn payout_totals(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT currency, status, CAST(SUM(amount) AS BIGINT) FROM payouts
         WHERE tenant_id = $1 AND partner_id = $2
         GROUP BY currency, status",
    )
    .bind(tenant_id)
    .bind(partner_id)
    .fetch_all(&mut **tx)
    .await
}

/// Clawbacks no payout has absorbed, per partner and currency: (partner, currency, sum < 0).
pub async fn open_adjustments(
    tx: &mut Tx,
    tenant_id: &str,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT partner_id, currency, CAST(SUM(amount) AS BIGINT) FROM payout_adjustments
         WHERE tenant_id = $1 AND payout_id IS NULL
         GROUP BY partner_id, currency
         ORDER BY partner_id, currency",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await
}

/// Binds the partner's open clawbacks in `currency` to `payout_id`; returns their sum (<= 0).
pub async fn absorb_adjustments(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    currency: &str,
    payout_id: &str,
) -> sqlx::Result<i64> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "UPDATE payout_adjustments SET payout_id = $1
         WHERE tenant_id = $2 AND partner_id = $3 AND currency = $4 AND payout_id IS NULL
         RETURNING amount",
    )
    .bind(payout_id)
    .bind(tenant_id)
    .bind(partner_id)
    .bind(currency)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(amount,)| amount).sum())
}

/// Frees the clawbacks `payout_id` absorbed (it failed or was reversed).
pub async fn release_adjustments(
    tx: &mut Tx,
    tenant_id: &str,
    payout_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payout_adjustments SET payout_id = NULL WHERE tenant_id = $1 AND payout_id = $2",
    )
    .bind(tenant_id)
    .bind(payout_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes the clawbacks of a commission that no payout absorbed; returns what the absorbed
/// ones still take (a positive amount: what a payout has already held back for it).
pub async fn drop_open_adjustments(
    tx: &mut Tx,
    tenant_id: &str,
    commission_id: &str,
) -> sqlx::Result<i64> {
    sqlx::query(
        "DELETE FROM payout_adjustments
         WHERE tenant_id = $1 AND commission_id = $2 AND payout_id IS NULL",
    )
    .bind(tenant_id)
    .bind(commission_id)
    .execute(&mut **tx)
    .await?;
    clawed_back_of(tx, tenant_id, commission_id).await
}

/// What was clawed back of one commission so far (a positive amount).
pub async fn clawed_back_of(
    tx: &mut Tx,
    tenant_id: &str,
    commission_id: &str,
) -> sqlx::Result<i64> {
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM payout_adjustments
         WHERE tenant_id = $1 AND commission_id = $2",
    )
    .bind(tenant_id)
    .bind(commission_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(-sum)
}

#[derive(Clone, Debug)]
pub struct NewAdjustment<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub partner_id: &'a str,
    pub commission_id: &'a str,
    pub currency: &'a str,
    pub amount: i64,
    pub created_at: i64,
}

pub async fn insert_adjustment(tx: &mut Tx, a: &NewAdjustment<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payout_adjustments (id, tenant_id, partner_id, commission_id, currency,
             amount, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(a.id)
    .bind(a.tenant_id)
    .bind(a.partner_id)
    .bind(a.commission_id)
    .bind(a.currency)
    .bind(a.amount)
    .bind(a.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A partner's clawbacks per currency: (currency, all of them, the open ones), both <= 0.
pub async fn adjustment_totals(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT currency, CAST(SUM(amount) AS BIGINT),
                CAST(SUM(CASE WHEN payout_id IS NULL THEN amount ELSE 0 END) AS BIGINT)
         FROM payout_adjustments
         WHERE tenant_id = $1 AND partner_id = $2
         GROUP BY currency",
    )
    .bind(tenant_id)
    .bind(partner_id)
    .fetch_all(&mut **tx)
    .await
}

/// Saves the amounts a payout's bind actually took.
pub async fn save_amounts(tx: &mut Tx, p: &StoredPayout) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payouts SET amount = $1, commissions_amount = $2, clawed_back = $3,
             commission_count = $4
         WHERE tenant_id = $5 AND id = $6",
    )
    .bind(p.amount)
    .bind(p.commissions_amount)
    .bind(p.clawed_back)
    .bind(p.commission_count)
    .bind(&p.tenant_id)
    .bind(&p.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a payout a run undid in its own transaction (nothing was bound to it any more).
pub async fn delete_payout(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM payouts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Every pending manual payout, oldest first (the CSV export without a run): Connect payouts
/// are paid by their transfers, never by hand.
pub async fn pending_manual_payouts(
    tx: &mut Tx,
    tenant_id: &str,
) -> sqlx::Result<Vec<StoredPayout>> {
    let sql = format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts
         WHERE tenant_id = $1 AND status = 'pending' AND method = 'manual'
         ORDER BY created_at, id"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await
}

/// What partners from the Network were paid with `paid_at` in `(since, until]`, per currency.
pub async fn paid_to_network(
    tx: &mut Tx,
    tenant_id: &str,
    since: i64,
    until: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT p.currency, CAST(SUM(p.amount) AS BIGINT) FROM payouts p
         JOIN partners r ON r.tenant_id = p.tenant_id AND r.id = p.partner_id
         WHERE p.tenant_id = $1 AND p.status = 'paid' AND r.source = 'network'
           AND p.paid_at > $2 AND p.paid_at <= $3
         GROUP BY p.currency
         ORDER BY p.currency",
    )
    .bind(tenant_id)
    .bind(since)
    .bind(until)
    .fetch_all(&mut **tx)
    .await
}
