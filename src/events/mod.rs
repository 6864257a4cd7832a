//! Conversion events in: `POST /v1/events` and `/v1/events/batch`.
//!
//! An event runs in one transaction: the conversion row (its `event_id` deduplicates forever),
//! the customer through the identity graph or the click, the attribution, the commission or,
//! for a refund, the reversal of its order's commissions, and the announcements of each.
//! A repeat of an `event_id` with the same body gets the first answer again and changes
//! nothing; the same id with a different body is 409 `event_id_conflict`.

pub mod routes;
mod store;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::attribution::{self, Clicks};
use crate::campaigns::{self, currency_code};
use crate::commissions::{self, Conversion};
use crate::http::error::{Error, FieldError, Result};
use crate::http::validate::{check_time, validated};
use crate::identities::{self, Identifiers};
use crate::{ids, partners};

/// The types every tenant has; tenants add their own as `custom.<name>`.
pub const TYPES: [&str; 7] = [
    "signup",
    "purchase",
    "renewal",
    "refund",
    "opportunity_won",
    "trial_converted",
    "lead_qualified",
];

/// A conversion event as a CRM or backend sends it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct NewEvent {
    /// Your id for the event, 1 to 200 characters; it deduplicates forever.
    pub event_id: String,
    /// One of `signup`, `purchase`, `renewal`, `refund`, `opportunity_won`, `trial_converted`,
    /// `lead_qualified`, or `custom.<name>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339; defaults to now.
    pub occurred_at: Option<String>,
    /// The click id the visitor arrived with (`clk_...`).
    pub click_id: Option<String>,
    /// Who converted, when there is no click id: resolved through the identity graph.
    pub identities: Option<Identifiers>,
    /// The order (deal, subscription) the event belongs to; a `refund` reverses the commissions
    /// of its order. Defaults to `event_id`; required for refunds.
    pub order_id: Option<String>,
    /// Minor units, 0 to 10^15; with `currency`.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Option<i64>,
    /// ISO 4217.
    pub currency: Option<String>,
    /// Attribute only to clicks of this campaign.
    pub campaign_id: Option<String>,
    pub metadata: Option<Value>,
}

/// What became of an event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventResult {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub customer_id: Option<String>,
    pub attribution: Option<AttributionResult>,
    /// The commission it earned (`commission.accrued` was announced).
    pub commission_id: Option<String>,
    /// For a refund: commissions of the order it reversed.
    pub reversed_commission_ids: Vec<String>,
    /// For a partial refund: commissions of the order it took the refunded share of.
    #[serde(default)]
    pub adjusted_commission_ids: Vec<String>,
    /// For a refund: paid commissions of the order (or ones a pending payout holds), recorded.
    pub refunded_paid_commission_ids: Vec<String>,
    /// Of those, the ones clawed back from their partner's next payouts
    /// (`clawback_paid_refunds` on).
    #[serde(default)]
    pub clawed_back_commission_ids: Vec<String>,
    /// Why an attributed conversion earned no commission because of its campaign's dates:
    /// `campaign_not_started` or `campaign_ended` (at the conversion's `occurred_at`).
    #[serde(default)]
    pub no_commission_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttributionResult {
    pub attribution_id: String,
    pub click_id: String,
    pub partner_id: String,
    pub campaign_id: String,
}

/// Applies the refunds an order has had so far to its commissions again (a payout holding them
/// failed, so they are unpaid after all and take their refunds themselves). Nothing when the
/// order has had no refund.
pub async fn reapply_refunds(
    state: &AppState,
    tx: &mut crate::db::Tx,
    handoff: &mut job_queue::Handoff,
    tenant_id: &str,
    order_id: &str,
) -> anyhow::Result<()> {
    commissions::store::lock_order(tx, tenant_id, order_id).await?;
    let (sold, refunds) = store::order_amounts(tx, tenant_id, order_id).await?;
    if !refunds.is_empty() {
        let share = commissions::RefundShare::of(sold, &refunds);
        commissions::refund_order(state, tx, handoff, tenant_id, order_id, share).await?;
    }
    Ok(())
}

/// How an event was taken: newly (201) or as a repeat of its id (200).
pub enum Taken {
    New(EventResult),
    Repeat(EventResult),
}

fn valid_type(name: &str) -> bool {
    TYPES.contains(&name)
        || name.strip_prefix("custom.").is_some_and(|rest| {
            (1..=64).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Waits, when any of `events` names a click, until every click this node answered before now
/// is written: one it answered moments ago may still be in the router's buffer (ADR 7). Once
/// per request, so a batch of 500 waits once.
pub async fn await_named_clicks(state: &AppState, events: &[Value]) {
    if events
        .iter()
        .any(|event| event.get("click_id").is_some_and(|id| !id.is_null()))
    {
        state.links.flush().await;
    }
}

/// Parses and validates `raw` (one event's JSON), then takes it.
pub async fn take(state: &AppState, tenant_id: &str, raw: Value) -> Result<Taken> {
    take_in_group(state, tenant_id, raw, None).await
}

/// [`take`], for a refund whose `amount` is the running total of `refund_group` (Stripe's
/// `amount_refunded` of a charge) rather than an amount of its own.
pub async fn take_in_group(
    state: &AppState,
    tenant_id: &str,
    raw: Value,
    refund_group: Option<&str>,
) -> Result<Taken> {
    // The hash of the body as parsed (keys sorted), so whitespace and key order do not matter.
    let body_hash = hex::encode(Sha256::digest(raw.to_string().as_bytes()));
    let event: NewEvent =
        serde_json::from_value(raw).map_err(|e| Error::InvalidBody(e.to_string()))?;
    let mut errors = Vec::new();
    let event_id = event.event_id.trim();
    if event_id.is_empty() || event_id.len() > 200 {
        errors.push(FieldError::new("event_id", "must be 1 to 200 characters"));
    }
    if !valid_type(&event.event_type) {
        errors.push(FieldError::new(
            "type",
            format!(
                "must be one of {} or custom.<name> (a-z, 0-9, _)",
                TYPES.join(", ")
            ),
        ));
    }
    let occurred_at = match &event.occurred_at {
        Some(time) => check_time("occurred_at", time, &mut errors),
        None => Some(state.clock.now_ms()),
    };
    if event
        .amount
        .is_some_and(|a| !(0..=commissions::MAX_AMOUNT).contains(&a))
    {
        errors.push(FieldError::new(
            "amount",
            "must be 0 to 1000000000000000 (10^15) minor units",
        ));
    }
    let currency = event.currency.as_deref().map(currency_code);
    match (&event.amount, &currency) {
        (_, Some(None)) => errors.push(FieldError::new(
            "currency",
            "must be an ISO 4217 code such as EUR",
        )),
        (Some(_), None) => errors.push(FieldError::new("currency", "an amount needs a currency")),
        _ => {}
    }
    let currency = currency.flatten();
    if event.event_type == "refund" && event.order_id.is_none() {
        errors.push(FieldError::new(
            "order_id",
            "a refund names the order whose commissions it reverses",
        ));
    }
    if let Some(order) = &event.order_id {
        if order.trim().is_empty() || order.len() > 200 {
            errors.push(FieldError::new("order_id", "must be 1 to 200 characters"));
        }
    }
    if let Some(click) = event
        .click_id
        .as_deref()
        .filter(|c| !ids::is_valid("clk", c))
    {
        errors.push(FieldError::new(
            "click_id",
            format!("{click:?} is not a click id (clk_...)"),
        ));
    }
    if event.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        errors.push(FieldError::new("metadata", "must be a JSON object"));
    }
    let mut tx = state.db.write(tenant_id).await?;
    let mut handoff = state.queue.handoff();
    let region = identities::phone_region(&mut tx, tenant_id, state.config.phone_region).await?;
    let pairs = match &event.identities {
        Some(given) => given
            .normalized(region, "identities")
            .unwrap_or_else(|invalid| {
                errors.extend(invalid);
                Vec::new()
            }),
        None => Vec::new(),
    };
    validated(errors)?;
    let occurred_at = occurred_at.expect("validated");

    if let Some((hash, result)) = store::find(&mut tx, tenant_id, event_id).await? {
        return repeat(&hash, &body_hash, &result, event_id);
    }

    let mut customer_id = None;
    for (namespace, identifier) in &pairs {
        if let Some(subject) =
            identities::find_subject(&mut tx, tenant_id, *namespace, identifier, Some("customer"))
                .await?
        {
            customer_id = Some(subject.subject_id);
            break;
        }
    }
    if let Some(click) = &event.click_id {
        match identities::click_customer(&mut tx, tenant_id, click).await? {
            Some(owner) => customer_id = customer_id.or(owner),
            None => {
                return Err(Error::NotFound {
                    code: "click_not_found",
                    detail: format!("no click {click}"),
                })
            }
        }
    }
    let conversion_id = ids::new("cnv");
    let order_id = event.order_id.as_deref().unwrap_or(event_id).trim();
    let inserted = store::insert(
        &mut tx,
        &store::NewConversion {
            id: &conversion_id,
            tenant_id,
            event_id,
            event_type: &event.event_type,
            order_id,
            occurred_at,
            customer_id: customer_id.as_deref(),
            click_id: event.click_id.as_deref(),
            amount: event.amount,
            currency: currency.as_deref(),
            refund_group,
            body_hash: &body_hash,
            created_at: state.clock.now_ms(),
        },
    )
    .await?;
    if !inserted {
        // A concurrent request with the same id committed first: answer as its repeat.
        drop(tx);
        let mut tx = state.db.read(tenant_id).await?;
        let (hash, result) = store::find(&mut tx, tenant_id, event_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("event {event_id} vanished"))?;
        return repeat(&hash, &body_hash, &result, event_id);
    }

    let mut result = EventResult {
        event_id: event_id.to_owned(),
        event_type: event.event_type.clone(),
        customer_id: customer_id.clone(),
        attribution: None,
        commission_id: None,
        reversed_commission_ids: Vec::new(),
        adjusted_commission_ids: Vec::new(),
        refunded_paid_commission_ids: Vec::new(),
        clawed_back_commission_ids: Vec::new(),
        no_commission_reason: None,
    };
    if event.event_type == "refund" {
        // The order's commissions are locked first, so two refunds at once each count the
        // other (PostgreSQL; SQLite has one writer). This refund is stored already.
        commissions::store::lock_order(&mut tx, tenant_id, order_id).await?;
        let (sold, refunds) = store::order_amounts(&mut tx, tenant_id, order_id).await?;
        let share = commissions::RefundShare::of(sold, &refunds);
        let refunded =
            commissions::refund_order(state, &mut tx, &mut handoff, tenant_id, order_id, share)
                .await?;
        result.reversed_commission_ids = refunded.reversed;
        result.adjusted_commission_ids = refunded.adjusted;
        result.refunded_paid_commission_ids = refunded.already_paid;
        result.clawed_back_commission_ids = refunded.clawed_back;
    } else {
        let clicks = match (&event.click_id, &customer_id) {
            (Some(click), _) => Some(Clicks::Click(click)),
            (None, Some(customer)) => Some(Clicks::Customer(customer)),
            (None, None) => None,
        };
        let click = match clicks {
            Some(clicks) => {
                attribution::find_click(
                    &mut tx,
                    tenant_id,
                    clicks,
                    occurred_at,
                    event.campaign_id.as_deref(),
                )
                .await?
            }
            None => None,
        };
        if let Some(click) = click {
            let conversion = Conversion {
                id: &conversion_id,
                event_id,
                event_type: &event.event_type,
                order_id,
                occurred_at,
                amount: event.amount,
                currency: currency.as_deref(),
                click_id: &click.click_id,
            };
            let attribution_id = attribution::record(
                state,
                &mut tx,
                &mut handoff,
                tenant_id,
                &conversion,
                &click,
                customer_id.as_deref(),
            )
            .await?;
            let partner = partners::existing(&mut tx, tenant_id, &click.partner_id).await?;
            let campaign =
                campaigns::routes::existing(&mut tx, tenant_id, &click.campaign_id).await?;
            // The campaign's dates govern earning; its links redirect whatever they say.
            match campaign.outside_dates(occurred_at) {
                Some(reason) => result.no_commission_reason = Some(reason.to_owned()),
                None => {
                    let commission = commissions::accrue(
                        state,
                        &mut tx,
                        &mut handoff,
                        &partner,
                        &campaign,
                        &conversion,
                    )
                    .await?;
                    result.commission_id = commission.map(|c| c.id);
                }
            }
            result.attribution = Some(AttributionResult {
                attribution_id,
                click_id: click.click_id,
                partner_id: click.partner_id,
                campaign_id: click.campaign_id,
            });
        }
    }
    let stored = serde_json::to_string(&result).map_err(anyhow::Error::from)?;
    store::set_result(&mut tx, tenant_id, &conversion_id, &stored).await?;
    tx.commit().await?;
    handoff.start();
    Ok(Taken::New(result))
}

fn repeat(hash: &str, body_hash: &str, result: &str, event_id: &str) -> Result<Taken> {
    if hash != body_hash {
        return Err(Error::Conflict {
            code: "event_id_conflict",
            detail: format!("event {event_id:?} was sent before with a different body"),
        });
    }
    let result = serde_json::from_str(result).map_err(anyhow::Error::from)?;
    Ok(Taken::Repeat(result))
}
