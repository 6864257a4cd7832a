//! Commissions: what a partner earns for an attributed conversion.
//!
//! - The rule is the partner's amendment if it has one, else the terms snapshotted when it
//!   joined the campaign, else the campaign's rule. A percent rule takes `bps` basis points of
//!   the amount, **rounded half up to the minor unit** (`1999 * 15% = 299.85 -> 300`); a flat rule
//!   pays its amount whatever the conversion's. Nothing is earned when the result is zero.
//! - Renewals earn only on recurring terms.
//! - A commission is `pending` until its holdback has passed; then the periodic
//!   `commissions.approve` job approves it. A payout run binds approved ones to a payout
//!   (`payout_id`), and they are `paid` once it is. A refund of the same order reverses pending
//!   and approved commissions; a refund of a paid one (or of one a pending payout holds) is
//!   recorded on it (`refunded_at`) and counted, and clawed back from the partner's next payouts
//!   only when the tenant turned `clawback_paid_refunds` on. A partial refund (refunds of the order adding up to less than it sold for)
//!   takes the refunded share back instead: `reversed_amount` becomes the commission times the
//!   refunded fraction, rounded half up, recomputed from all refunds so far so that several
//!   partial refunds never drift; once they add up to the whole, the commission is reversed.
//! - Each change is announced: `commission.accrued`, `commission.approved`,
//!   `commission.adjusted` (a partial refund), `commission.reversed`.

pub mod routes;
pub mod store;

use std::time::Duration;

use job_queue::{Job, KindOptions, NewJob, Outcome, Periodic, Worker};
use serde_json::{json, Value};

use job_queue::Handoff;

use crate::app::AppState;
use crate::campaigns::{self, CommissionRule, StoredCampaign};
use crate::clock::rfc3339;
use crate::db::Tx;
use crate::partners::StoredPartner;
use crate::webhooks::catalog::CommissionEvent;
use crate::{ids, outbox, tenants};

pub use store::StoredCommission;

pub const APPROVE: &str = "commissions.approve";
/// When maturity is checked: every minute.
pub const APPROVE_EVERY: &str = "0 * * * * *";
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Commissions approved per tenant per transaction.
const APPROVE_BATCH: i64 = 500;

/// The largest amount of money the API takes, in minor units (10^15: ten trillion in a
/// two-decimal currency). Amounts are checked against it where they enter, so every product
/// below stays far inside 64 bits.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// `bps` basis points of `amount`, rounded half up to the minor unit. Computed in 128 bits, so
/// no pair of 64-bit inputs wraps; within [`MAX_AMOUNT`] and 0..=10000 bps the result is exact
/// (outside them it saturates).
pub fn percent_of(amount: i64, bps: i64) -> i64 {
    let exact = (i128::from(amount) * i128::from(bps) + 5_000).div_euclid(10_000);
    i64::try_from(exact).unwrap_or(if exact < 0 { i64::MIN } else { i64::MAX })
}

/// What `rule` pays for a conversion of `amount` in `currency`: `None` when it pays nothing
/// (a percent rule without an amount, or a zero result).
pub fn earned(
    rule: &CommissionRule,
    amount: Option<i64>,
    currency: Option<&str>,
) -> Option<(i64, String)> {
    let (earned, currency) = match rule {
        CommissionRule::Percent { bps } => (percent_of(amount?, *bps), currency?.to_owned()),
        CommissionRule::Flat { amount, currency } => (*amount, currency.clone()),
    };
    (earned > 0).then_some((earned, currency))
}

/// An attributed conversion, as commissions need it.
pub struct Conversion<'a> {
    pub id: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub order_id: &'a str,
    pub occurred_at: i64,
    pub amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub click_id: &'a str,
}

/// Accrues the commission `conversion` earns `partner` in `campaign`, if any, and announces it.
pub async fn accrue(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    partner: &StoredPartner,
    campaign: &StoredCampaign,
    conversion: &Conversion<'_>,
) -> anyhow::Result<Option<StoredCommission>> {
    let tenant = &partner.tenant_id;
    let partnership =
        campaigns::store::find_partnership(tx, tenant, &partner.id, &campaign.id).await?;
    let (snapshot, recurring, holdback_days) = match &partnership {
        Some(p) => (p.commission(), p.recurring == 1, p.holdback_days),
        None => (
            campaign.commission(),
            campaign.recurring == 1,
            campaign.holdback_days,
        ),
    };
    if conversion.event_type == "renewal" && !recurring {
        return Ok(None);
    }
    let rule = partner.amendment().unwrap_or(snapshot);
    let Some((amount, currency)) = earned(&rule, conversion.amount, conversion.currency) else {
        return Ok(None);
    };
    let now = state.clock.now_ms();
    let commission = StoredCommission {
        id: ids::new("com"),
        tenant_id: tenant.clone(),
        partner_id: partner.id.clone(),
        campaign_id: campaign.id.clone(),
        conversion_id: conversion.id.to_owned(),
        click_id: conversion.click_id.to_owned(),
        event_id: conversion.event_id.to_owned(),
        order_id: conversion.order_id.to_owned(),
        transaction_id: format!("txn_{}", conversion.id.trim_start_matches("cnv_")),
        amount,
        reversed_amount: 0,
        currency,
        status: "pending".to_owned(),
        payout_id: None,
        matures_at: conversion.occurred_at + holdback_days * DAY_MS,
        approved_at: None,
        reversed_at: None,
        refunded_at: None,
        created_at: now,
        updated_at: now,
    };
    store::insert(tx, &commission).await?;
    announce(state, tx, handoff, &commission, "commission.accrued").await?;
    Ok(Some(commission))
}

/// What a refund did to the commissions of its order.
#[derive(Default)]
pub struct Refunded {
    pub reversed: Vec<String>,
    /// Commissions a partial refund took a share of (`commission.adjusted`).
    pub adjusted: Vec<String>,
    /// Paid commissions (or ones a pending payout holds): recorded and counted.
    pub already_paid: Vec<String>,
    /// Of those, the ones whose refunded share was clawed back (`clawback_paid_refunds`).
    pub clawed_back: Vec<String>,
}

/// How much of an order has been refunded, all refunds so far included.
#[derive(Clone, Copy, Debug)]
pub enum RefundShare {
    /// A refund without an amount, or refunds adding up to the order's amount or more.
    Full,
    /// `refunded` of the order's `amount` (both in minor units, `0 < refunded < amount`).
    Part { refunded: i64, amount: i64 },
}

impl RefundShare {
    /// The share of an order refunded by `refunds` (the amounts of its refund events so far,
    /// `None` for one without an amount), the order having been sold for `sold`.
    pub fn of(sold: i64, refunds: &[Option<i64>]) -> Self {
        let refunded: Option<i64> = refunds.iter().copied().sum();
        match refunded {
            Some(refunded) if refunded < sold => Self::Part {
                refunded,
                amount: sold,
            },
            _ => Self::Full,
        }
    }

    /// The part of `commission` this share takes back, rounded half up to the minor unit
    /// (so refunds adding up to the whole take back exactly the whole).
    fn of_commission(self, commission: i64) -> i64 {
        match self {
            Self::Full => commission,
            Self::Part { refunded, amount } => {
                let exact = (i128::from(commission) * i128::from(refunded) * 2
                    + i128::from(amount))
                .div_euclid(2 * i128::from(amount));
                i64::try_from(exact).unwrap_or(commission).min(commission)
            }
        }
    }
}

/// Applies a refund of `order_id` that brings its refunded share to `share`. In full: reverses
/// what is not paid yet and records it on what is. In part: takes the refunded share of each
/// pending or approved commission back (`reversed_amount`, announced as `commission.adjusted`),
/// and records it on paid ones. A commission a pending payout holds counts as paid: the money
/// is on its way. Where the tenant claws back paid refunds, the refunded share of a paid
/// commission becomes a negative balance of its partner ([`crate::payouts::claw_back`]).
pub async fn refund_order(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    tenant_id: &str,
    order_id: &str,
    share: RefundShare,
) -> anyhow::Result<Refunded> {
    let now = state.clock.now_ms();
    let mut refunded = Refunded::default();
    let mut clawback = None;
    for mut commission in store::of_order(tx, tenant_id, order_id).await? {
        let unpaid = commission.payout_id.is_none();
        match (commission.status.as_str(), share) {
            ("pending" | "approved", RefundShare::Full) if unpaid => {
                crate::payouts::undo_claw_back(tx, &commission, now).await?;
                commission.status = "reversed".to_owned();
                commission.reversed_at = Some(now);
                commission.refunded_at = Some(now);
                commission.updated_at = now;
                store::update_status(tx, &commission).await?;
                announce(state, tx, handoff, &commission, "commission.reversed").await?;
                refunded.reversed.push(commission.id);
            }
            ("pending" | "approved", RefundShare::Part { .. }) if unpaid => {
                let taken = share.of_commission(commission.amount);
                if taken <= commission.reversed_amount {
                    continue;
                }
                crate::payouts::undo_claw_back(tx, &commission, now).await?;
                commission.reversed_amount = taken;
                commission.refunded_at = Some(now);
                commission.updated_at = now;
                store::update_status(tx, &commission).await?;
                announce(state, tx, handoff, &commission, "commission.adjusted").await?;
                refunded.adjusted.push(commission.id);
            }
            ("paid" | "approved", _) => {
                commission.refunded_at.get_or_insert(now);
                commission.updated_at = now;
                store::update_status(tx, &commission).await?;
                let claws = match clawback {
                    Some(on) => on,
                    None => *clawback.insert(crate::payouts::claws_back(tx, tenant_id).await?),
                };
                // The share taken before it was paid is already out of what it paid.
                let taken = share.of_commission(commission.amount) - commission.reversed_amount;
                if claws && crate::payouts::claw_back(tx, &commission, taken, now).await? {
                    refunded.clawed_back.push(commission.id.clone());
                }
                refunded.already_paid.push(commission.id);
            }
            _ => {}
        }
    }
    Ok(refunded)
}

fn payload(c: &StoredCommission) -> Value {
    json!(CommissionEvent {
        commission_id: c.id.clone(),
        partner_id: c.partner_id.clone(),
        campaign_id: c.campaign_id.clone(),
        event_id: c.event_id.clone(),
        click_id: c.click_id.clone(),
        transaction_id: c.transaction_id.clone(),
        amount: c.amount,
        reversed_amount: c.reversed_amount,
        currency: c.currency.clone(),
        status: c.status.clone(),
        payout_id: c.payout_id.clone(),
        created_at: rfc3339(c.created_at),
    })
}

async fn announce(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    commission: &StoredCommission,
    event_type: &str,
) -> anyhow::Result<()> {
    outbox::emit(
        tx,
        handoff,
        &state.clock,
        &commission.tenant_id,
        event_type,
        payload(commission),
    )
    .await?;
    Ok(())
}

/// Registers the approval job on `worker`.
pub fn register(worker: Worker, state: AppState) -> Worker {
    worker.register(
        APPROVE,
        KindOptions {
            concurrency: 1,
            lease: Duration::from_secs(state.config.job_lease_secs),
            ..KindOptions::default()
        },
        move |job| approve(state.clone(), job),
    )
}

/// The periodic schedule that enqueues the approval job.
pub fn schedule(periodic: Periodic) -> Result<Periodic, job_queue::Error> {
    periodic.every(APPROVE_EVERY, NewJob::new(APPROVE, json!({})))
}

async fn approve(state: AppState, _job: Job) -> Outcome {
    match approve_matured(&state).await {
        Ok(_) => Outcome::Done,
        Err(err) => Outcome::retry(format!("approving commissions failed: {err:#}")),
    }
}

/// Approves every pending commission whose holdback has passed, in every tenant. Returns how
/// many were approved.
pub async fn approve_matured(state: &AppState) -> anyhow::Result<usize> {
    let mut approved = 0;
    for tenant in tenants::all_ids(state.db.pool()).await? {
        loop {
            let now = state.clock.now_ms();
            let mut tx = state.db.write(&tenant).await?;
            let mut handoff = state.queue.handoff();
            let due = store::matured(&mut tx, &tenant, now, APPROVE_BATCH).await?;
            let count = due.len();
            for mut commission in due {
                // Only what is still pending now: a refund may have reversed it since the read.
                if !store::approve(&mut tx, &commission, now).await? {
                    continue;
                }
                commission.status = "approved".to_owned();
                commission.approved_at = Some(now);
                commission.updated_at = now;
                let approved = "commission.approved";
                announce(state, &mut tx, &mut handoff, &commission, approved).await?;
            }
            tx.commit().await?;
            handoff.start();
            approved += count;
            if (count as i64) < APPROVE_BATCH {
                break;
            }
        }
    }
    Ok(approved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against the exact rational: the quotient, plus one when the remainder is at least
        /// half the divisor.
        #[test]
        fn percent_of_is_the_exact_rounding_of_every_bounded_amount(
            amount in 0..=MAX_AMOUNT,
            bps in 0..=10_000_i64,
        ) {
            let product = amount as u128 * bps as u128;
            let (quotient, remainder) = (product / 10_000, product % 10_000);
            let exact = quotient + u128::from(remainder * 2 >= 10_000);
            prop_assert_eq!(percent_of(amount, bps) as u128, exact);
        }
    }

    #[test]
    fn a_partial_refund_takes_back_its_share_rounded_half_up() {
        let quarter = RefundShare::of(10_000, &[Some(2_500)]);
        assert_eq!(quarter.of_commission(1_000), 250);
        assert_eq!(quarter.of_commission(333), 83); // 83.25
        assert_eq!(RefundShare::of(3, &[Some(1)]).of_commission(1), 0); // 0.33
        assert_eq!(RefundShare::of(2, &[Some(1)]).of_commission(1), 1); // 0.5 -> 1
                                                                        // Cumulative: two refunds of a third each take two thirds, not two rounded thirds.
        assert_eq!(
            RefundShare::of(300, &[Some(100), Some(100)]).of_commission(100),
            67
        );
        assert!(matches!(
            RefundShare::of(300, &[Some(100), Some(200)]),
            RefundShare::Full
        ));
        assert!(matches!(
            RefundShare::of(300, &[Some(100), None]),
            RefundShare::Full
        ));
        assert!(matches!(RefundShare::of(0, &[Some(0)]), RefundShare::Full));
    }

    #[test]
    fn percent_commissions_round_half_up_to_the_minor_unit() {
        assert_eq!(percent_of(1999, 1500), 300); // 299.85
        assert_eq!(percent_of(1000, 1500), 150);
        assert_eq!(percent_of(10, 1250), 1); // 1.25
        assert_eq!(percent_of(30, 1500), 5); // 4.5 -> 5
        assert_eq!(percent_of(3, 1), 0); // 0.0003

        // Once wrapped to 15000 in 64 bits.
        assert_eq!(
            percent_of(3_074_457_345_618_358_602, 1500),
            461_168_601_842_753_790
        );
        assert_eq!(percent_of(MAX_AMOUNT, 10_000), MAX_AMOUNT);
    }

    #[test]
    fn nothing_is_earned_without_an_amount_or_at_zero() {
        let percent = CommissionRule::Percent { bps: 1000 };
        assert_eq!(earned(&percent, None, None), None);
        assert_eq!(earned(&percent, Some(4), Some("EUR")), None);
        assert_eq!(
            earned(&percent, Some(5000), Some("EUR")),
            Some((500, "EUR".to_owned()))
        );
        let flat = CommissionRule::Flat {
            amount: 700,
            currency: "GBP".to_owned(),
        };
        assert_eq!(earned(&flat, None, None), Some((700, "GBP".to_owned())));
    }
}
