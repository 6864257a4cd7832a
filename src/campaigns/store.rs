//! SQL for the `campaigns` and `partnerships` tables.

use crate::db::Tx;
use crate::http::pagination::Page;

use super::CommissionRule;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredCampaign {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub destination_url: String,
    /// Space-separated host names.
    pub allowed_domains: String,
    pub click_param: String,
    pub commission_type: String,
    pub commission_bps: Option<i64>,
    pub commission_amount: Option<i64>,
    pub commission_currency: Option<String>,
    pub recurring: i64,
    pub holdback_days: i64,
    pub attribution_model: String,
    pub attribution_window_days: i64,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl StoredCampaign {
    pub fn commission(&self) -> CommissionRule {
        CommissionRule::from_columns(
            Some(&self.commission_type),
            self.commission_bps,
            self.commission_amount,
            self.commission_currency.as_deref(),
        )
        .expect("a campaign always stores a complete rule")
    }

    pub fn set_commission(&mut self, rule: &CommissionRule) {
        let (kind, bps, amount, currency) = rule.to_columns();
        self.commission_type = kind;
        self.commission_bps = bps;
        self.commission_amount = amount;
        self.commission_currency = currency;
    }

    pub fn domains(&self) -> Vec<String> {
        self.allowed_domains
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// True once `ends_at` has passed.
    pub fn ended(&self, now: i64) -> bool {
        self.ends_at.is_some_and(|end| end <= now)
    }

    /// Why a conversion at `at` earns nothing in this campaign, if it is outside its dates:
    /// `campaign_not_started` or `campaign_ended`.
    pub fn outside_dates(&self, at: i64) -> Option<&'static str> {
        if self.starts_at.is_some_and(|start| at < start) {
            Some("campaign_not_started")
        } else if self.ended(at) {
            Some("campaign_ended")
        } else {
            None
        }
    }
}

const COLUMNS: &str = "id, tenant_id, name, destination_url, allowed_domains, click_param, \
    commission_type, commission_bps, commission_amount, commission_currency, recurring, \
    holdback_days, attribution_model, attribution_window_days, starts_at, ends_at, created_at, \
    updated_at";

pub async fn insert(tx: &mut Tx, c: &StoredCampaign) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO campaigns ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    );
    sqlx::query(&sql)
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.name)
        .bind(&c.destination_url)
        .bind(&c.allowed_domains)
        .bind(&c.click_param)
        .bind(&c.commission_type)
        .bind(c.commission_bps)
        .bind(c.commission_amount)
        .bind(&c.commission_currency)
        .bind(c.recurring)
        .bind(c.holdback_days)
        .bind(&c.attribution_model)
        .bind(c.attribution_window_days)
        .bind(c.starts_at)
        .bind(c.ends_at)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn update(tx: &mut Tx, c: &StoredCampaign) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE campaigns SET name = $1, destination_url = $2, allowed_domains = $3,
            click_param = $4, commission_type = $5, commission_bps = $6, commission_amount = $7,
            commission_currency = $8, recurring = $9, holdback_days = $10,
            attribution_model = $11, attribution_window_days = $12, starts_at = $13,
            ends_at = $14, updated_at = $15
         WHERE tenant_id = $16 AND id = $17",
    )
    .bind(&c.name)
    .bind(&c.destination_url)
    .bind(&c.allowed_domains)
    .bind(&c.click_param)
    .bind(&c.commission_type)
    .bind(c.commission_bps)
    .bind(c.commission_amount)
    .bind(&c.commission_currency)
    .bind(c.recurring)
    .bind(c.holdback_days)
    .bind(&c.attribution_model)
    .bind(c.attribution_window_days)
    .bind(c.starts_at)
    .bind(c.ends_at)
    .bind(c.updated_at)
    .bind(&c.tenant_id)
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<Option<StoredCampaign>> {
    let sql = format!("SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 AND id = $2");
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

/// One page of the tenant's campaigns, newest first.
pub async fn list(tx: &mut Tx, tenant_id: &str, page: &Page) -> sqlx::Result<Vec<StoredCampaign>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM campaigns
         WHERE tenant_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3))
         ORDER BY created_at DESC, id DESC
         LIMIT $4"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

/// A partner in a campaign, with the terms snapshotted when it joined.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Partnership {
    pub id: String,
    pub tenant_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub commission_type: String,
    pub commission_bps: Option<i64>,
    pub commission_amount: Option<i64>,
    pub commission_currency: Option<String>,
    pub recurring: i64,
    pub holdback_days: i64,
    pub created_at: i64,
}

impl Partnership {
    pub fn commission(&self) -> CommissionRule {
        CommissionRule::from_columns(
            Some(&self.commission_type),
            self.commission_bps,
            self.commission_amount,
            self.commission_currency.as_deref(),
        )
        .expect("a partnership always stores a complete rule")
    }
}

const PARTNERSHIP_COLUMNS: &str = "id, tenant_id, partner_id, campaign_id, commission_type, \
    commission_bps, commission_amount, commission_currency, recurring, holdback_days, created_at";

/// The partner's partnership in the campaign, created with a snapshot of the campaign's terms
/// if it has none. Returns it and whether this call created it.
pub async fn join(
    tx: &mut Tx,
    campaign: &StoredCampaign,
    partner_id: &str,
    id: &str,
    now: i64,
) -> sqlx::Result<(Partnership, bool)> {
    let sql = format!(
        "INSERT INTO partnerships ({PARTNERSHIP_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (partner_id, campaign_id) DO NOTHING"
    );
    let created = sqlx::query(&sql)
        .bind(id)
        .bind(&campaign.tenant_id)
        .bind(partner_id)
        .bind(&campaign.id)
        .bind(&campaign.commission_type)
        .bind(campaign.commission_bps)
        .bind(campaign.commission_amount)
        .bind(&campaign.commission_currency)
        .bind(campaign.recurring)
        .bind(campaign.holdback_days)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    let sql = format!(
        "SELECT {PARTNERSHIP_COLUMNS} FROM partnerships
         WHERE tenant_id = $1 AND partner_id = $2 AND campaign_id = $3"
    );
    let partnership = sqlx::query_as(&sql)
        .bind(&campaign.tenant_id)
        .bind(partner_id)
        .bind(&campaign.id)
        .fetch_one(&mut **tx)
        .await?;
    Ok((partnership, created))
}

/// One page of a partner's partnerships, newest first.
pub async fn partnerships(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    page: &Page,
) -> sqlx::Result<Vec<Partnership>> {
    let sql = format!(
        "SELECT {PARTNERSHIP_COLUMNS} FROM partnerships
         WHERE tenant_id = $1 AND partner_id = $2
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

/// The partner's partnership in the campaign, if it joined.
pub async fn find_partnership(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    campaign_id: &str,
) -> sqlx::Result<Option<Partnership>> {
    let sql = format!(
        "SELECT {PARTNERSHIP_COLUMNS} FROM partnerships
         WHERE tenant_id = $1 AND partner_id = $2 AND campaign_id = $3"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(partner_id)
        .bind(campaign_id)
        .fetch_optional(&mut **tx)
        .await
}
