//! SQL for the `partners` and `partner_history` tables.

use crate::db::{is_unique_violation, Tx};
use crate::http::pagination::Page;

use crate::campaigns::CommissionRule;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredPartner {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    /// A JSON object.
    pub metadata: String,
    pub status: String,
    pub source: String,
    pub network_partner_id: Option<String>,
    /// The partner's creator id on the Network, once the Network has it.
    pub network_creator_id: Option<String>,
    /// The revision of the latest change mirrored to the Network (see `network`).
    pub network_revision: Option<i64>,
    pub terms_type: Option<String>,
    pub terms_bps: Option<i64>,
    pub terms_amount: Option<i64>,
    pub terms_currency: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl StoredPartner {
    /// The admin's per-partner amendment of commission terms, if any.
    pub fn amendment(&self) -> Option<CommissionRule> {
        CommissionRule::from_columns(
            self.terms_type.as_deref(),
            self.terms_bps,
            self.terms_amount,
            self.terms_currency.as_deref(),
        )
    }

    pub fn set_amendment(&mut self, rule: Option<&CommissionRule>) {
        let (kind, bps, amount, currency) = match rule.map(CommissionRule::to_columns) {
            Some((kind, bps, amount, currency)) => (Some(kind), bps, amount, currency),
            None => (None, None, None, None),
        };
        self.terms_type = kind;
        self.terms_bps = bps;
        self.terms_amount = amount;
        self.terms_currency = currency;
    }
}

const COLUMNS: &str = "id, tenant_id, email, name, phone, metadata, status, source, \
    network_partner_id, terms_type, terms_bps, terms_amount, terms_currency, revoked_at, \
    revoked_reason, created_at, updated_at, network_creator_id, network_revision";

/// Why a partner could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("a partner with this e-mail address exists")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn email_taken(err: sqlx::Error) -> WriteError {
    if is_unique_violation(
        &err,
        "partners_email_key",
        "partners.tenant_id, partners.email",
    ) {
        WriteError::EmailTaken
    } else {
        err.into()
    }
}

pub async fn insert(tx: &mut Tx, p: &StoredPartner) -> Result<(), WriteError> {
    let sql = format!(
        "INSERT INTO partners ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19)"
    );
    sqlx::query(&sql)
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.email)
        .bind(&p.name)
        .bind(&p.phone)
        .bind(&p.metadata)
        .bind(&p.status)
        .bind(&p.source)
        .bind(&p.network_partner_id)
        .bind(&p.terms_type)
        .bind(p.terms_bps)
        .bind(p.terms_amount)
        .bind(&p.terms_currency)
        .bind(p.revoked_at)
        .bind(&p.revoked_reason)
        .bind(p.created_at)
        .bind(p.updated_at)
        .bind(&p.network_creator_id)
        .bind(p.network_revision)
        .execute(&mut **tx)
        .await
        .map_err(email_taken)?;
    Ok(())
}

/// Stamps the creator id the Network gave the partner.
pub async fn set_network_creator_id(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    creator_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE partners SET network_creator_id = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(creator_id)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records that the partner's state of `revision` is on its way to the Network.
pub async fn set_network_revision(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    revision: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE partners SET network_revision = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(revision)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Up to `limit` partners with ids after `after`, by id (a walk over every partner).
pub async fn page_by_id(
    tx: &mut Tx,
    tenant_id: &str,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<StoredPartner>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM partners WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}

pub async fn update(tx: &mut Tx, p: &StoredPartner) -> Result<(), WriteError> {
    sqlx::query(
        "UPDATE partners SET email = $1, name = $2, phone = $3, metadata = $4, status = $5,
            terms_type = $6, terms_bps = $7, terms_amount = $8, terms_currency = $9,
            revoked_at = $10, revoked_reason = $11, updated_at = $12
         WHERE tenant_id = $13 AND id = $14",
    )
    .bind(&p.email)
    .bind(&p.name)
    .bind(&p.phone)
    .bind(&p.metadata)
    .bind(&p.status)
    .bind(&p.terms_type)
    .bind(p.terms_bps)
    .bind(p.terms_amount)
    .bind(&p.terms_currency)
    .bind(p.revoked_at)
    .bind(&p.revoked_reason)
    .bind(p.updated_at)
    .bind(&p.tenant_id)
    .bind(&p.id)
    .execute(&mut **tx)
    .await
    .map_err(email_taken)?;
    Ok(())
}

pub async fn find(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<Option<StoredPartner>> {
    let sql = format!("SELECT {COLUMNS} FROM partners WHERE tenant_id = $1 AND id = $2");
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

/// One page of the tenant's partners, newest first, optionally by exact e-mail and status.
pub async fn list(
    tx: &mut Tx,
    tenant_id: &str,
    email: Option<&str>,
    status: Option<&str>,
    page: &Page,
) -> sqlx::Result<Vec<StoredPartner>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM partners
         WHERE tenant_id = $1 AND ($2 = '' OR email = $2) AND ($3 = '' OR status = $3)
           AND (created_at < $4 OR (created_at = $4 AND id < $5))
         ORDER BY created_at DESC, id DESC
         LIMIT $6"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(email.unwrap_or_default())
        .bind(status.unwrap_or_default())
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

/// A revocation or reinstatement.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HistoryEntry {
    pub action: String,
    pub reason: Option<String>,
    pub notify: i64,
    pub created_at: i64,
}

pub async fn record(
    tx: &mut Tx,
    partner: &StoredPartner,
    entry: &HistoryEntry,
    id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO partner_history (id, tenant_id, partner_id, action, reason, notify, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&partner.tenant_id)
    .bind(&partner.id)
    .bind(&entry.action)
    .bind(&entry.reason)
    .bind(entry.notify)
    .bind(entry.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The partner's revocations and reinstatements, oldest first.
pub async fn history(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
) -> sqlx::Result<Vec<HistoryEntry>> {
    sqlx::query_as(
        "SELECT action, reason, notify, created_at FROM partner_history
         WHERE tenant_id = $1 AND partner_id = $2
         ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .bind(partner_id)
    .fetch_all(&mut **tx)
    .await
}

/// The partner's status (`active` or `revoked`), if the tenant has that partner.
pub async fn status(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT status FROM partners WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(|(status,)| status))
}

/// The ids of the tenant's revoked partners.
pub async fn revoked_ids(
    tx: &mut Tx,
    tenant_id: &str,
) -> sqlx::Result<std::collections::HashSet<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM partners WHERE tenant_id = $1 AND status = 'revoked'")
            .bind(tenant_id)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
