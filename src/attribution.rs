//! Attribution: a conversion -> the customer -> the click that earns it -> the partner.
//!
//! Candidates are the customer's clicks (or the one click the event names) made before the
//! conversion and within their campaign's window, excluding clicks flagged `revoked` and clicks
//! of partners revoked since. The campaign of the most recent candidate decides the model:
//! `last_click` takes its most recent click, `first_click` its earliest within the window.

use serde_json::json;

use job_queue::Handoff;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::commissions::Conversion;
use crate::db::Tx;
use crate::webhooks::catalog::AttributionEvent;
use crate::{ids, outbox};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Whose clicks are candidates.
pub enum Clicks<'a> {
    /// The click the event names.
    Click(&'a str),
    /// Every click tied to the customer.
    Customer(&'a str),
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Candidate {
    pub click_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub created_at: i64,
    pub attribution_model: String,
    pub attribution_window_days: i64,
}

/// The click `occurred_at` is attributed to, if any; only clicks of `campaign_id` when given.
pub async fn find_click(
    tx: &mut Tx,
    tenant_id: &str,
    clicks: Clicks<'_>,
    occurred_at: i64,
    campaign_id: Option<&str>,
) -> sqlx::Result<Option<Candidate>> {
    // One statement per way of naming the clicks, so each finds them through its own index
    // (the customer index holds only clicks tied to a customer).
    let (named_by, id) = match clicks {
        Clicks::Click(id) => ("c.id = $2", id),
        Clicks::Customer(id) => ("c.customer_id = $2", id),
    };
    let sql = format!(
        "SELECT c.id AS click_id, c.partner_id, c.campaign_id, c.created_at,
                cp.attribution_model, cp.attribution_window_days
         FROM clicks c
         JOIN campaigns cp ON cp.id = c.campaign_id AND cp.tenant_id = c.tenant_id
         JOIN partners p ON p.id = c.partner_id AND p.tenant_id = c.tenant_id
         WHERE c.tenant_id = $1 AND {named_by} AND c.revoked = 0 AND p.status = 'active'
           AND c.created_at <= $3 AND ($4 = '' OR c.campaign_id = $4)
         ORDER BY c.created_at, c.id"
    );
    let candidates: Vec<Candidate> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .bind(occurred_at)
        .bind(campaign_id.unwrap_or_default())
        .fetch_all(&mut **tx)
        .await?;
    Ok(choose(candidates, occurred_at))
}

/// The model's pick among `candidates` (oldest first).
fn choose(candidates: Vec<Candidate>, occurred_at: i64) -> Option<Candidate> {
    let in_window: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| occurred_at - c.created_at <= c.attribution_window_days * DAY_MS)
        .collect();
    let latest = in_window.last()?.clone();
    if latest.attribution_model == "first_click" {
        in_window
            .into_iter()
            .find(|c| c.campaign_id == latest.campaign_id)
    } else {
        Some(latest)
    }
}

/// Records the attribution of `conversion` to `click` and announces it through `handoff`.
/// Returns the attribution id.
pub async fn record(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    tenant_id: &str,
    conversion: &Conversion<'_>,
    click: &Candidate,
    customer_id: Option<&str>,
) -> anyhow::Result<String> {
    let id = ids::new("atr");
    let now = state.clock.now_ms();
    sqlx::query(
        "INSERT INTO attributions (id, tenant_id, conversion_id, click_id, partner_id, campaign_id,
                                   customer_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(conversion.id)
    .bind(&click.click_id)
    .bind(&click.partner_id)
    .bind(&click.campaign_id)
    .bind(customer_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let data = json!(AttributionEvent {
        attribution_id: id.clone(),
        event_id: conversion.event_id.to_owned(),
        event_type: conversion.event_type.to_owned(),
        partner_id: click.partner_id.clone(),
        campaign_id: click.campaign_id.clone(),
        click_id: click.click_id.clone(),
        customer_id: customer_id.map(str::to_owned),
        created_at: rfc3339(now),
    });
    outbox::emit(
        tx,
        handoff,
        &state.clock,
        tenant_id,
        "attribution.created",
        data,
    )
    .await?;
    Ok(id)
}

/// The revenue attributed to partners in `tenant_id` between `after` and `until` (Unix ms, the
/// attributions' times, `after` excluded): the amounts in `currency` of the attributed
/// conversions (refunds are never attributed).
pub async fn revenue(
    tx: &mut Tx,
    tenant_id: &str,
    currency: &str,
    after: i64,
    until: i64,
) -> sqlx::Result<i64> {
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(c.amount), 0) AS BIGINT)
         FROM attributions a JOIN conversions c ON c.id = a.conversion_id
         WHERE a.tenant_id = $1 AND c.tenant_id = $1 AND c.currency = $2
           AND a.created_at > $3 AND a.created_at <= $4",
    )
    .bind(tenant_id)
    .bind(currency)
    .bind(after)
    .bind(until)
    .fetch_one(&mut **tx)
    .await?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(id: &str, campaign: &str, at_day: i64, model: &str, window: i64) -> Candidate {
        Candidate {
            click_id: id.to_owned(),
            partner_id: "ptr".to_owned(),
            campaign_id: campaign.to_owned(),
            created_at: at_day * DAY_MS,
            attribution_model: model.to_owned(),
            attribution_window_days: window,
        }
    }

    #[test]
    fn last_click_wins_by_default_and_first_click_when_asked() {
        let last = vec![
            click("a", "c1", 1, "last_click", 30),
            click("b", "c1", 5, "last_click", 30),
        ];
        assert_eq!(choose(last, 10 * DAY_MS).unwrap().click_id, "b");
        let first = vec![
            click("a", "c1", 1, "first_click", 30),
            click("b", "c1", 5, "first_click", 30),
        ];
        assert_eq!(choose(first, 10 * DAY_MS).unwrap().click_id, "a");
    }

    #[test]
    fn clicks_outside_their_window_do_not_count() {
        let old = vec![click("a", "c1", 0, "last_click", 30)];
        assert!(choose(old.clone(), 30 * DAY_MS).is_some());
        assert!(choose(old, 30 * DAY_MS + 1).is_none());
        let first = vec![
            click("a", "c1", 0, "first_click", 7),
            click("b", "c1", 5, "first_click", 7),
        ];
        assert_eq!(choose(first, 10 * DAY_MS).unwrap().click_id, "b");
    }
}
