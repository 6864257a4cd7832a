//! SQL for the `conversions` table.

use crate::db::{is_unique_violation, Tx};

#[derive(Clone, Debug)]
pub struct NewConversion<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub order_id: &'a str,
    pub occurred_at: i64,
    pub customer_id: Option<&'a str>,
    pub click_id: Option<&'a str>,
    pub amount: Option<i64>,
    pub currency: Option<&'a str>,
    /// For a refund given as a running total: what the total is of (see `order_amounts`).
    pub refund_group: Option<&'a str>,
    pub body_hash: &'a str,
    pub created_at: i64,
}

/// The hash of the body and the stored answer of an event id the tenant sent before.
pub async fn find(
    tx: &mut Tx,
    tenant_id: &str,
    event_id: &str,
) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as(
        "SELECT body_hash, result FROM conversions WHERE tenant_id = $1 AND event_id = $2",
    )
    .bind(tenant_id)
    .bind(event_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Inserts the conversion; false when its event id exists (a concurrent duplicate).
pub async fn insert(tx: &mut Tx, c: &NewConversion<'_>) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO conversions (id, tenant_id, event_id, event_type, order_id, occurred_at,
                                  customer_id, click_id, amount, currency, body_hash, result, created_at,
                                  refund_group)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', $12, $13)",
    )
    .bind(c.id)
    .bind(c.tenant_id)
    .bind(c.event_id)
    .bind(c.event_type)
    .bind(c.order_id)
    .bind(c.occurred_at)
    .bind(c.customer_id)
    .bind(c.click_id)
    .bind(c.amount)
    .bind(c.currency)
    .bind(c.body_hash)
    .bind(c.created_at)
    .bind(c.refund_group)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e)
            if is_unique_violation(
                &e,
                "conversions_event_key",
                "conversions.tenant_id, conversions.event_id",
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Stores the answer the event got, for repeats of its id.
pub async fn set_result(tx: &mut Tx, tenant_id: &str, id: &str, result: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE conversions SET result = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(result)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What `order_id` sold for (the amounts of its conversions other than refunds) and what its
/// refunds came to so far, one entry per refund (`None` for one without an amount) except for
/// refunds given as running totals, which count once per group, at the group's largest total.
pub async fn order_amounts(
    tx: &mut Tx,
    tenant_id: &str,
    order_id: &str,
) -> sqlx::Result<(i64, Vec<Option<i64>>)> {
    let rows: Vec<(String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT event_type, amount, refund_group FROM conversions
         WHERE tenant_id = $1 AND order_id = $2",
    )
    .bind(tenant_id)
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut sold = 0;
    let mut refunds = Vec::new();
    let mut groups: Vec<(String, Option<i64>)> = Vec::new();
    for (event_type, amount, group) in rows {
        match (event_type == "refund", group) {
            (false, _) => sold += amount.unwrap_or(0),
            (true, None) => refunds.push(amount),
            (true, Some(group)) => match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, total)) => *total = (*total).max(amount),
                None => groups.push((group, amount)),
            },
        }
    }
    refunds.extend(groups.into_iter().map(|(_, total)| total));
    Ok((sold, refunds))
}
