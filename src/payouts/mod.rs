//! Payouts: partners are paid on a schedule, never twice, and every cent is accounted for.
//!
//! - **Payout accounts.** A partner gets a Stripe Express connected account once
//!   (`POST /v1/accounts`, idempotent by partner) and single-use onboarding links
//!   (`POST /v1/account_links`). Its readiness (`ready`: `payouts_enabled` and the `transfers`
//!   capability `active`; `onboarding` until details are submitted; `restricted` otherwise) is
//!   kept current by `account.updated` from the Connect webhook and re-read before each
//!   transfer.
//! - **Runs.** Weekly by default (`SWITCHYARD_PAYOUT_SCHEDULE`; one job per window across nodes)
//!   or on demand. A run sums each partner's approved commissions that no payout holds, per
//!   currency, adds the clawbacks no payout absorbed yet (negative), and makes one payout per
//!   partner and currency when the result reaches the tenant's `payout_minimum` (and is above
//!   zero), the partner is not revoked and, for Stripe Connect, its account is ready. Anything
//!   else carries to the next run, listed with its reason. The commissions are bound to the
//!   payout in the transaction that creates it (`commissions.payout_id`: one column, so one
//!   payout per commission by construction), and the bind re-checks each row, so two runs at
//!   once, on one node or several, never bind a commission twice.
//! - **Transfers.** One `payouts.transfer` job per payout: `POST /v1/transfers` with
//!   `Idempotency-Key: payout_<id>`, the same across retries, crashes and nodes, so Stripe makes
//!   one transfer whatever happens here. Success pays the payout and its commissions
//!   (`payout.paid`); Stripe's permanent refusal fails it and frees its commissions for the next
//!   run (`payout.failed`); a transfer that could not be confirmed is retried, and when the
//!   attempts are spent the payout stays `pending` with its job dead and replayable in
//!   `/v1/queue` (marking it failed could pay twice). `transfer.reversed` reverses a paid payout
//!   (`payout.reversed`) and approves its commissions again.
//! - **Manual payouts** (PayPal, wire: the `manual` method): a run makes the payouts without
//!   transfers; the admin exports them as CSV and marks each paid with a reference.
//! - **Clawbacks.** With `clawback_paid_refunds` on, a refund of a paid commission leaves its
//!   partner a negative adjustment that later payouts absorb; a payout is never negative.

pub mod routes;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use job_queue::{Handoff, Job, KindOptions, NewJob, Outcome, Periodic, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::commissions::{self, StoredCommission};
use crate::db::Tx;
use crate::http::error::Error;
use crate::partners::StoredPartner;
use crate::stripe::client::StripeError;
use crate::webhooks::catalog::PayoutEvent;
use crate::{ids, outbox, tenants};

pub use store::{StoredAccount, StoredPayout, StoredRun};

/// The periodic run over every tenant.
pub const RUN: &str = "payouts.run";
/// One payout's Stripe transfer.
pub const TRANSFER: &str = "payouts.transfer";
/// Partners paid per transaction of a run.
const RUN_BATCH: usize = 250;

/// How a tenant pays its partners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Stripe Connect transfers to the partners' Express accounts.
    StripeConnect,
    /// Outside Switchyard (PayPal, wire): exported as CSV, marked paid by hand.
    Manual,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::StripeConnect => "stripe_connect",
            Method::Manual => "manual",
        }
    }

    fn parse(stored: &str) -> Method {
        if stored == "manual" {
            Method::Manual
        } else {
            Method::StripeConnect
        }
    }
}

/// A tenant's payout settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub method: Method,
    /// The smallest payout, in minor units of each currency.
    pub payout_minimum: i64,
    pub clawback_paid_refunds: bool,
    /// Where Stripe sends a partner who finished onboarding; the hub's own page when unset.
    pub onboarding_return_url: Option<String>,
    pub updated_at: Option<i64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            method: Method::StripeConnect,
            payout_minimum: 0,
            clawback_paid_refunds: false,
            onboarding_return_url: None,
            updated_at: None,
        }
    }
}

pub async fn settings(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Settings> {
    Ok(match store::settings(tx, tenant_id).await? {
        Some(s) => Settings {
            method: Method::parse(&s.method),
            payout_minimum: s.payout_minimum,
            clawback_paid_refunds: s.clawback_paid_refunds == 1,
            onboarding_return_url: s.onboarding_return_url,
            updated_at: Some(s.updated_at),
        },
        None => Settings::default(),
    })
}

pub async fn save_settings(
    tx: &mut Tx,
    tenant_id: &str,
    settings: &Settings,
    now: i64,
) -> sqlx::Result<()> {
    let stored = store::StoredSettings {
        method: settings.method.as_str().to_owned(),
        payout_minimum: settings.payout_minimum,
        clawback_paid_refunds: i64::from(settings.clawback_paid_refunds),
        onboarding_return_url: settings.onboarding_return_url.clone(),
        updated_at: now,
    };
    store::save_settings(tx, tenant_id, &stored).await
}

/// Whether refunds of paid commissions are clawed back in this tenant.
pub async fn claws_back(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<bool> {
    Ok(settings(tx, tenant_id).await?.clawback_paid_refunds)
}

/// Claws back what refunds took of a paid commission, `taken` in all (minor units): the part
/// not clawed back yet becomes a negative adjustment of its partner. Returns whether there was
/// such a part (a repeated refund claws back nothing twice).
pub async fn claw_back(
    tx: &mut Tx,
    commission: &StoredCommission,
    taken: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let tenant = &commission.tenant_id;
    let more = taken - store::clawed_back_of(tx, tenant, &commission.id).await?;
    if more <= 0 {
        return Ok(false);
    }
    let adjustment = store::NewAdjustment {
        id: &ids::new("adj"),
        tenant_id: tenant,
        partner_id: &commission.partner_id,
        commission_id: &commission.id,
        currency: &commission.currency,
        amount: -more,
        created_at: now,
    };
    store::insert_adjustment(tx, &adjustment).await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Payout accounts

/// An account's readiness, read from Stripe's Account object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// `onboarding`, `ready` or `restricted`.
    pub status: &'static str,
    pub currently_due: Vec<String>,
    pub disabled_reason: Option<String>,
}

pub fn readiness(account: &Value) -> Readiness {
    let ready = account["payouts_enabled"].as_bool() == Some(true)
        && account["capabilities"]["transfers"].as_str() == Some("active");
    let status = if ready {
        "ready"
    } else if account["details_submitted"].as_bool() == Some(true) {
        "restricted"
    } else {
        "onboarding"
    };
    let requirements = &account["requirements"];
    Readiness {
        status,
        currently_due: requirements["currently_due"]
            .as_array()
            .map(|due| {
                due.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        disabled_reason: requirements["disabled_reason"].as_str().map(str::to_owned),
    }
}

async fn save_readiness(
    state: &AppState,
    tenant_id: &str,
    account_id: &str,
    readiness: &Readiness,
) -> sqlx::Result<bool> {
    let mut tx = state.db.write(tenant_id).await?;
    let known = store::update_account(
        &mut tx,
        tenant_id,
        account_id,
        readiness.status,
        &json!(readiness.currently_due).to_string(),
        readiness.disabled_reason.as_deref(),
        state.clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(known)
}

/// `account.updated`: the account's readiness as Stripe now says. Returns whether the account
/// is a partner's of this tenant.
pub async fn account_updated(
    state: &AppState,
    tenant_id: &str,
    account: &Value,
) -> sqlx::Result<bool> {
    let Some(id) = account["id"].as_str() else {
        return Ok(false);
    };
    save_readiness(state, tenant_id, id, &readiness(account)).await
}

/// The tenant's Stripe secret key, or 409 `stripe_not_configured`.
async fn stripe_key(state: &AppState, tenant_id: &str) -> Result<String, Error> {
    let mut tx = state.db.read(tenant_id).await?;
    let slug = tenants::slug_of(&mut tx, tenant_id)
        .await?
        .unwrap_or_default();
    let settings = crate::stripe::settings(state, &mut tx, tenant_id, &slug).await?;
    tx.commit().await?;
    settings.secret_key.ok_or_else(|| Error::Conflict {
        code: "stripe_not_configured",
        detail: "this tenant has no Stripe secret key (PUT /v1/stripe)".to_owned(),
    })
}

/// A Stripe failure during an API request: 502 `stripe_error` with Stripe's message.
fn upstream(err: StripeError) -> Error {
    Error::Upstream {
        code: "stripe_error",
        detail: err.to_string(),
    }
}

/// A fresh onboarding link and the account it is for.
pub struct Onboarding {
    pub account: StoredAccount,
    pub url: String,
    /// Unix seconds, as Stripe gave it.
    pub expires_at: Option<i64>,
}

/// Creates `partner`'s Express account if it has none, and mints an onboarding link for it.
pub async fn onboard(
    state: &AppState,
    partner: &StoredPartner,
    country: Option<&str>,
) -> Result<Onboarding, Error> {
    let tenant = &partner.tenant_id;
    if partner.status == "revoked" {
        return Err(Error::Conflict {
            code: "partner_revoked",
            detail: "a revoked partner is not paid".to_owned(),
        });
    }
    let key = stripe_key(state, tenant).await?;
    let mut tx = state.db.read(tenant).await?;
    let existing = store::account(&mut tx, tenant, &partner.id).await?;
    let payout_settings = settings(&mut tx, tenant).await?;
    tx.commit().await?;
    let account = match existing {
        Some(account) => account,
        None => {
            let params = json!({
                "type": "express",
                "email": partner.email,
                "country": country,
                "capabilities": {"transfers": {"requested": true}},
                "metadata": {"switchyard_partner_id": partner.id, "switchyard_tenant_id": tenant},
            });
            // Keyed by partner: two requests at once (or a retry) get the one account.
            let created = state
                .stripe
                .post(
                    &key,
                    "/v1/accounts",
                    &params,
                    &format!("account_{}", partner.id),
                    None,
                )
                .await
                .map_err(upstream)?;
            let id = created["id"]
                .as_str()
                .filter(|id| id.starts_with("acct_"))
                .ok_or_else(|| Error::Upstream {
                    code: "stripe_error",
                    detail: "Stripe's answer has no account id".to_owned(),
                })?;
            let readiness = readiness(&created);
            let now = state.clock.now_ms();
            let mut tx = state.db.write(tenant).await?;
            let stored = store::insert_account(
                &mut tx,
                &StoredAccount {
                    tenant_id: tenant.clone(),
                    partner_id: partner.id.clone(),
                    stripe_account_id: id.to_owned(),
                    status: readiness.status.to_owned(),
                    currently_due: json!(readiness.currently_due).to_string(),
                    disabled_reason: readiness.disabled_reason,
                    created_at: now,
                    updated_at: now,
                },
            )
            .await?;
            tx.commit().await?;
            stored
        }
    };
    let (url, expires_at) = mint_link(
        state,
        &key,
        &account,
        payout_settings.onboarding_return_url.as_deref(),
    )
    .await?;
    Ok(Onboarding {
        account,
        url,
        expires_at,
    })
}

async fn mint_link(
    state: &AppState,
    key: &str,
    account: &StoredAccount,
    return_url: Option<&str>,
) -> Result<(String, Option<i64>), Error> {
    let refresh = format!(
        "{}/v1/payout-onboarding/{}",
        state.config.public_url(),
        onboarding_token(state, &account.tenant_id, &account.partner_id)
    );
    let back = return_url.map_or_else(|| format!("{refresh}/return"), str::to_owned);
    let params = json!({
        "account": account.stripe_account_id,
        "refresh_url": refresh,
        "return_url": back,
        "type": "account_onboarding",
    });
    // A new link every time: links are single-use.
    let link = state
        .stripe
        .post(key, "/v1/account_links", &params, &ids::new("alk"), None)
        .await
        .map_err(upstream)?;
    let url = link["url"]
        .as_str()
        .ok_or_else(|| Error::Upstream {
            code: "stripe_error",
            detail: "Stripe's answer has no link".to_owned(),
        })?
        .to_owned();
    Ok((url, link["expires_at"].as_i64()))
}

/// The token in a partner's onboarding URLs: its tenant and partner ids and a keyed digest of
/// them, so the public refresh route mints links only for accounts this hub made. It grants no
/// more than the onboarding link itself, which Stripe sends only to that partner.
pub fn onboarding_token(state: &AppState, tenant_id: &str, partner_id: &str) -> String {
    let digest = state
        .secrets
        .fingerprint(&format!("payout-onboarding:{tenant_id}:{partner_id}"));
    format!("{tenant_id}.{partner_id}.{digest}")
}

/// The (tenant, partner) a token names, when the token is genuine.
pub fn read_onboarding_token(state: &AppState, token: &str) -> Option<(String, String)> {
    let mut parts = token.split('.');
    let (tenant, partner, digest) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !ids::is_valid("ten", tenant) || !ids::is_valid("ptr", partner) {
        return None;
    }
    let expected = onboarding_token(state, tenant, partner);
    let given = format!("{tenant}.{partner}.{digest}");
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
        .then(|| (tenant.to_owned(), partner.to_owned()))
}

/// A new onboarding link for the account a genuine token names (Stripe's `refresh_url`).
pub async fn refresh_link(
    state: &AppState,
    tenant_id: &str,
    partner_id: &str,
) -> Result<String, Error> {
    let mut tx = state.db.read(tenant_id).await?;
    let account = store::account(&mut tx, tenant_id, partner_id).await?;
    let return_url = settings(&mut tx, tenant_id).await?.onboarding_return_url;
    let status = crate::partners::store::status(&mut tx, tenant_id, partner_id).await?;
    tx.commit().await?;
    // A revoked partner's old links mint nothing.
    let account = account
        .filter(|_| status.as_deref() == Some("active"))
        .ok_or_else(|| Error::not_found("payout account"))?;
    let key = stripe_key(state, tenant_id).await?;
    Ok(mint_link(state, &key, &account, return_url.as_deref())
        .await?
        .0)
}

/// Re-reads the partner's account from Stripe and stores its readiness; `None` when it has none.
pub async fn refresh_account(
    state: &AppState,
    tenant_id: &str,
    partner_id: &str,
) -> Result<Option<StoredAccount>, Error> {
    let mut tx = state.db.read(tenant_id).await?;
    let account = store::account(&mut tx, tenant_id, partner_id).await?;
    tx.commit().await?;
    let Some(account) = account else {
        return Ok(None);
    };
    let key = stripe_key(state, tenant_id).await?;
    let path = format!("/v1/accounts/{}", account.stripe_account_id);
    let read = state.stripe.get(&key, &path).await.map_err(upstream)?;
    save_readiness(
        state,
        tenant_id,
        &account.stripe_account_id,
        &readiness(&read),
    )
    .await?;
    let mut tx = state.db.read(tenant_id).await?;
    let account = store::account(&mut tx, tenant_id, partner_id).await?;
    tx.commit().await?;
    Ok(account)
}

// ---------------------------------------------------------------------------------------------
// Runs

/// A payout a run made (or, dry, would make).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PlannedPayout {
    /// `null` in a dry run.
    pub payout_id: Option<String>,
    pub partner_id: String,
    pub currency: String,
    /// What is paid: `commissions_amount` less `clawed_back`.
    pub amount: i64,
    pub commissions_amount: i64,
    pub clawed_back: i64,
    pub commission_count: i64,
}

/// A balance a run did not pay; it carries to the next run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Carried {
    pub partner_id: String,
    pub currency: String,
    /// The balance (minor units): approved commissions less open clawbacks; may be negative.
    pub amount: i64,
    /// `below_minimum`, `negative_balance`, `payout_account_not_ready` or `partner_revoked`.
    pub reason: String,
}

/// What a run did (or, dry, would do).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RunResult {
    /// `null` in a dry run, and when there was nothing to pay or carry.
    pub run_id: Option<String>,
    pub dry_run: bool,
    pub payouts: Vec<PlannedPayout>,
    pub carried: Vec<Carried>,
}

/// One partner's balance in one currency, before the run decides.
#[derive(Default)]
struct Open {
    commissions: i64,
    count: i64,
    adjustments: i64,
}

/// Decides what a run pays: the payouts to make and the balances carried.
async fn plan(
    tx: &mut Tx,
    tenant_id: &str,
) -> sqlx::Result<(Settings, Vec<PlannedPayout>, Vec<Carried>)> {
    let settings = settings(tx, tenant_id).await?;
    let mut open: BTreeMap<(String, String), Open> = BTreeMap::new();
    for p in commissions::store::payable(tx, tenant_id).await? {
        let entry = open.entry((p.partner_id, p.currency)).or_default();
        entry.commissions = p.amount;
        entry.count = p.count;
    }
    for (partner, currency, sum) in store::open_adjustments(tx, tenant_id).await? {
        open.entry((partner, currency)).or_default().adjustments = sum;
    }
    let revoked = crate::partners::store::revoked_ids(tx, tenant_id).await?;
    let ready: HashMap<String, String> = match settings.method {
        Method::StripeConnect => store::ready_partners(tx, tenant_id)
            .await?
            .into_iter()
            .collect(),
        Method::Manual => HashMap::new(),
    };
    let (mut payouts, mut carried) = (Vec::new(), Vec::new());
    for ((partner_id, currency), balance) in open {
        let amount = balance.commissions + balance.adjustments;
        let reason = if revoked.contains(&partner_id) {
            Some("partner_revoked")
        } else if amount <= 0 {
            Some("negative_balance").filter(|_| amount < 0 || balance.adjustments < 0)
        } else if amount < settings.payout_minimum {
            Some("below_minimum")
        } else if settings.method == Method::StripeConnect && !ready.contains_key(&partner_id) {
            Some("payout_account_not_ready")
        } else {
            None
        };
        match reason {
            Some(reason) => carried.push(Carried {
                partner_id,
                currency,
                amount,
                reason: reason.to_owned(),
            }),
            None if amount > 0 => payouts.push(PlannedPayout {
                payout_id: None,
                partner_id,
                currency,
                amount,
                commissions_amount: balance.commissions,
                clawed_back: -balance.adjustments,
                commission_count: balance.count,
            }),
            None => {}
        }
    }
    Ok((settings, payouts, carried))
}

/// Runs payouts in one tenant: on demand (`manual`) or from the schedule.
pub async fn run(
    state: &AppState,
    tenant_id: &str,
    triggered_by: &str,
    dry_run: bool,
) -> anyhow::Result<RunResult> {
    let mut tx = state.db.read(tenant_id).await?;
    let (settings, planned, carried) = plan(&mut tx, tenant_id).await?;
    tx.commit().await?;
    if dry_run || (planned.is_empty() && carried.is_empty()) {
        return Ok(RunResult {
            run_id: None,
            dry_run,
            payouts: planned,
            carried,
        });
    }
    let run_id = ids::new("run");
    let mut tx = state.db.write(tenant_id).await?;
    store::insert_run(
        &mut tx,
        &StoredRun {
            id: run_id.clone(),
            tenant_id: tenant_id.to_owned(),
            triggered_by: triggered_by.to_owned(),
            payout_count: 0,
            carried: json!(carried).to_string(),
            created_at: state.clock.now_ms(),
        },
    )
    .await?;
    tx.commit().await?;
    let mut made = Vec::with_capacity(planned.len());
    let mut carried = carried;
    for batch in planned.chunks(RUN_BATCH) {
        let mut tx = state.db.write(tenant_id).await?;
        let mut handoff = state.queue.handoff();
        for plan in batch {
            let made_one = make_payout(
                state,
                &mut tx,
                &mut handoff,
                tenant_id,
                &settings,
                &run_id,
                plan,
            );
            match made_one.await? {
                Made::Payout(payout) => made.push(payout),
                Made::Carried(balance) => carried.push(balance),
                Made::Nothing => {}
            }
        }
        tx.commit().await?;
        handoff.start();
    }
    let mut tx = state.db.write(tenant_id).await?;
    let count = made.len() as i64;
    store::finish_run(
        &mut tx,
        tenant_id,
        &run_id,
        count,
        &json!(carried).to_string(),
    )
    .await?;
    tx.commit().await?;
    Ok(RunResult {
        run_id: Some(run_id),
        dry_run: false,
        payouts: made,
        carried,
    })
}

enum Made {
    Payout(PlannedPayout),
    Carried(Carried),
    /// Another run paid this balance meanwhile.
    Nothing,
}

/// Creates one planned payout and binds what it pays. The amount is what the bind actually
/// took, so a commission another run bound, or a refund changed, since the plan is counted as
/// it is now; when that leaves too little, the payout is undone and the balance carried.
async fn make_payout(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    tenant_id: &str,
    settings: &Settings,
    run_id: &str,
    plan: &PlannedPayout,
) -> anyhow::Result<Made> {
    let tenant = tenant_id.to_owned();
    let now = state.clock.now_ms();
    let id = ids::new("pay");
    let destination = match settings.method {
        Method::StripeConnect => store::account(tx, &tenant, &plan.partner_id)
            .await?
            .map(|a| a.stripe_account_id),
        Method::Manual => None,
    };
    let mut payout = StoredPayout {
        id: id.clone(),
        tenant_id: tenant.clone(),
        run_id: run_id.to_owned(),
        partner_id: plan.partner_id.clone(),
        currency: plan.currency.clone(),
        amount: plan.amount,
        commissions_amount: plan.commissions_amount,
        clawed_back: plan.clawed_back,
        commission_count: plan.commission_count,
        method: settings.method.as_str().to_owned(),
        status: "pending".to_owned(),
        destination,
        transfer_id: None,
        reference: None,
        failure_code: None,
        failure_message: None,
        transfer_requested_at: None,
        created_at: now,
        updated_at: now,
        paid_at: None,
    };
    store::insert_payout(tx, &payout).await?;
    let nets =
        commissions::store::bind(tx, &tenant, &plan.partner_id, &plan.currency, &id, now).await?;
    let absorbed =
        store::absorb_adjustments(tx, &tenant, &plan.partner_id, &plan.currency, &id).await?;
    payout.commissions_amount = nets.iter().sum();
    payout.commission_count = nets.len() as i64;
    payout.clawed_back = -absorbed;
    payout.amount = payout.commissions_amount + absorbed;
    let nothing = payout.commission_count == 0 && absorbed == 0;
    if nothing || payout.amount <= 0 || payout.amount < settings.payout_minimum {
        commissions::store::release(tx, &tenant, &id, now).await?;
        store::release_adjustments(tx, &tenant, &id).await?;
        store::delete_payout(tx, &tenant, &id).await?;
        if nothing {
            return Ok(Made::Nothing);
        }
        let reason = if payout.amount < settings.payout_minimum && payout.amount > 0 {
            "below_minimum"
        } else {
            "negative_balance"
        };
        return Ok(Made::Carried(Carried {
            partner_id: plan.partner_id.clone(),
            currency: plan.currency.clone(),
            amount: payout.amount,
            reason: reason.to_owned(),
        }));
    }
    if (payout.amount, payout.commission_count, payout.clawed_back)
        != (plan.amount, plan.commission_count, plan.clawed_back)
    {
        store::save_amounts(tx, &payout).await?;
    }
    if settings.method == Method::StripeConnect {
        let job = NewJob::new(TRANSFER, json!({"tenant_id": tenant, "payout_id": id}))
            .dedupe_key(format!("payout:{id}"));
        handoff.enqueue_in(tx, job).await?;
    }
    Ok(Made::Payout(PlannedPayout {
        payout_id: Some(id),
        partner_id: payout.partner_id,
        currency: payout.currency,
        amount: payout.amount,
        commissions_amount: payout.commissions_amount,
        clawed_back: payout.clawed_back,
        commission_count: payout.commission_count,
    }))
}

// ---------------------------------------------------------------------------------------------
// Transfers and outcomes

#[derive(Deserialize)]
struct TransferPayload {
    tenant_id: String,
    payout_id: String,
}

/// Registers the transfer job and the periodic run on `worker`. Transfers run eight at a time;
/// the Stripe client's rate limit paces them.
pub fn register(worker: Worker, state: AppState) -> Worker {
    let lease = Duration::from_secs(state.config.job_lease_secs);
    let runs = state.clone();
    worker
        .register(
            TRANSFER,
            KindOptions {
                concurrency: 8,
                lease,
                ..KindOptions::default()
            },
            move |job: Job| {
                let state = state.clone();
                async move {
                    let Ok(payload) = serde_json::from_value::<TransferPayload>(job.payload) else {
                        return Outcome::Fail("malformed payout transfer payload".to_owned());
                    };
                    match transfer(&state, &payload.tenant_id, &payload.payout_id).await {
                        Ok(outcome) => outcome,
                        Err(err) => Outcome::retry(format!("the payout transfer failed: {err:#}")),
                    }
                }
            },
        )
        .register(
            RUN,
            KindOptions {
                concurrency: 1,
                lease,
                ..KindOptions::default()
            },
            move |_job: Job| {
                let state = runs.clone();
                async move {
                    match run_every_tenant(&state).await {
                        Ok(()) => Outcome::Done,
                        Err(err) => Outcome::retry(format!("the payout run failed: {err:#}")),
                    }
                }
            },
        )
}

/// Adds the scheduled run, unless the schedule is off.
pub fn schedule(periodic: Periodic, state: &AppState) -> Result<Periodic, job_queue::Error> {
    match state.config.payout_schedule.cron() {
        Some(cron) => periodic.every(&cron, NewJob::new(RUN, json!({}))),
        None => Ok(periodic),
    }
}

async fn run_every_tenant(state: &AppState) -> anyhow::Result<()> {
    for tenant in tenants::all_ids(state.db.pool()).await? {
        let result = run(state, &tenant, "schedule", false).await?;
        if let Some(run_id) = result.run_id {
            tracing::info!(%tenant, %run_id, payouts = result.payouts.len(), carried = result.carried.len(), "payout run");
        }
    }
    Ok(())
}

/// A Stripe idempotency key is kept for at least a day; a transfer first asked for longer ago
/// than this is looked for before it is asked again.
const KEY_KEPT_MS: i64 = 23 * 3600 * 1000;

/// A payout's transfer. Before the transfer is first asked for, the account is re-read (its
/// readiness stored) and a payout that cannot be paid fails at once. From then on a transfer
/// may exist, so the payout fails only on Stripe's definite refusal of the keyed request, after
/// looking for the transfer once more; everything else is retried with the same key.
async fn transfer(state: &AppState, tenant_id: &str, payout_id: &str) -> anyhow::Result<Outcome> {
    let mut tx = state.db.read(tenant_id).await?;
    let payout = store::find_payout(&mut tx, tenant_id, payout_id).await?;
    tx.commit().await?;
    let Some(payout) = payout else {
        return Ok(Outcome::Fail(format!("payout {payout_id} not found")));
    };
    if payout.status != "pending" || payout.method != Method::StripeConnect.as_str() {
        return Ok(Outcome::Done);
    }
    let requested = payout.transfer_requested_at;
    let refuse = |code: &str, message: String| Failure {
        code: code.to_owned(),
        message,
    };
    let key = match stripe_key(state, tenant_id).await {
        Ok(key) => key,
        Err(Error::Conflict { code, detail }) if requested.is_none() => {
            fail(state, tenant_id, payout_id, &refuse(code, detail)).await?;
            return Ok(Outcome::Done);
        }
        Err(err) => return Ok(Outcome::retry(format!("the payout transfer waits: {err}"))),
    };
    let Some(account) = payout.destination.clone() else {
        let failure = refuse(
            "account_not_ready",
            "the partner has no payout account".into(),
        );
        fail(state, tenant_id, payout_id, &failure).await?;
        return Ok(Outcome::Done);
    };
    match requested {
        None => {
            match state
                .stripe
                .get(&key, &format!("/v1/accounts/{account}"))
                .await
            {
                Ok(read) => {
                    let readiness = readiness(&read);
                    save_readiness(state, tenant_id, &account, &readiness).await?;
                    if readiness.status != "ready" {
                        let message = match &readiness.disabled_reason {
                            Some(why) => {
                                format!("the payout account is {}: {why}", readiness.status)
                            }
                            None => format!("the payout account is {}", readiness.status),
                        };
                        let failure = refuse("account_not_ready", message);
                        fail(state, tenant_id, payout_id, &failure).await?;
                        return Ok(Outcome::Done);
                    }
                }
                Err(err) if refused(&err) => {
                    fail(state, tenant_id, payout_id, &Failure::of(&err)).await?;
                    return Ok(Outcome::Done);
                }
                Err(err) => return Ok(retry(&err)),
            }
            let mut tx = state.db.write(tenant_id).await?;
            store::mark_requested(&mut tx, tenant_id, payout_id, state.clock.now_ms()).await?;
            tx.commit().await?;
        }
        Some(at) if state.clock.now_ms() - at > KEY_KEPT_MS => {
            // Stripe may have forgotten the key: a transfer made then would not be replayed.
            match find_transfer(state, &key, &payout).await {
                Ok(Some(found)) => {
                    paid(state, tenant_id, payout_id, Settled::Transfer(found)).await?;
                    return Ok(Outcome::Done);
                }
                Ok(None) => {}
                Err(err) => return Ok(retry(&err)),
            }
        }
        Some(_) => {}
    }
    let params = json!({
        "amount": payout.amount,
        "currency": payout.currency.to_ascii_lowercase(),
        "destination": account,
        "transfer_group": payout.run_id,
        "metadata": {"payout_id": payout.id, "switchyard_partner_id": payout.partner_id},
    });
    let key_for_payout = format!("payout_{}", payout.id);
    let sent = state
        .stripe
        .post(&key, "/v1/transfers", &params, &key_for_payout, None)
        .await;
    match sent {
        Ok(transfer) => match transfer["id"].as_str().filter(|id| id.starts_with("tr_")) {
            Some(id) => {
                let how = Settled::Transfer(id.to_owned());
                paid(state, tenant_id, payout_id, how).await?;
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::retry("Stripe's answer has no transfer id")),
        },
        Err(err) if refused(&err) => {
            // An earlier request with this key may still have succeeded (Stripe does not keep a
            // refusal for its key): look before failing.
            match find_transfer(state, &key, &payout).await {
                Ok(Some(found)) => {
                    paid(state, tenant_id, payout_id, Settled::Transfer(found)).await?;
                }
                Ok(None) => fail(state, tenant_id, payout_id, &Failure::of(&err)).await?,
                Err(lookup) => return Ok(retry(&lookup)),
            }
            Ok(Outcome::Done)
        }
        Err(err) => Ok(retry(&err)),
    }
}

/// Whether Stripe refused for good: a 4xx other than a conflict or a rate limit, that
/// `Stripe-Should-Retry` does not call retryable. Anything else may have been done, or may
/// succeed when asked again.
fn refused(err: &StripeError) -> bool {
    matches!(err, StripeError::Api { status, .. }
        if (400..500).contains(status) && *status != 409 && *status != 429)
        && err.retry().is_none()
}

/// The transfer Stripe made for `payout`, if any: its run's transfer group, searched for the
/// payout's id in the metadata.
async fn find_transfer(
    state: &AppState,
    key: &str,
    payout: &StoredPayout,
) -> Result<Option<String>, StripeError> {
    let mut after = String::new();
    loop {
        let mut path = format!(
            "/v1/transfers?limit=100&transfer_group={}",
            url::form_urlencoded::byte_serialize(payout.run_id.as_bytes()).collect::<String>()
        );
        if !after.is_empty() {
            path.push_str(&format!("&starting_after={after}"));
        }
        let page = state.stripe.get(key, &path).await?;
        let transfers = page["data"].as_array().cloned().unwrap_or_default();
        if let Some(found) = transfers
            .iter()
            .find(|t| t["metadata"]["payout_id"].as_str() == Some(payout.id.as_str()))
        {
            return Ok(found["id"].as_str().map(str::to_owned));
        }
        match transfers.last().and_then(|t| t["id"].as_str()) {
            Some(last) if page["has_more"].as_bool() == Some(true) => after = last.to_owned(),
            _ => return Ok(None),
        }
    }
}

fn retry(err: &StripeError) -> Outcome {
    let error = format!("the payout transfer will be retried: {err}");
    match err.retry().flatten() {
        Some(after) => Outcome::retry_after(after, error),
        None => Outcome::retry(error),
    }
}

/// Why a payout failed for good.
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    fn of(err: &StripeError) -> Self {
        match err {
            StripeError::Api { code, message, .. } => Self {
                code: if code.is_empty() {
                    "stripe_error"
                } else {
                    code
                }
                .to_owned(),
                message: message.clone(),
            },
            StripeError::Transport(_) => Self {
                code: "stripe_unreachable".to_owned(),
                message: err.to_string(),
            },
        }
    }
}

/// How a payout was paid.
pub enum Settled {
    Transfer(String),
    /// Marked paid by an admin, with their reference.
    Reference(String),
}

fn announced(payout: &StoredPayout, commission_ids: Vec<String>) -> Value {
    json!(PayoutEvent {
        payout_id: payout.id.clone(),
        partner_id: payout.partner_id.clone(),
        run_id: payout.run_id.clone(),
        amount: payout.amount,
        currency: payout.currency.clone(),
        status: payout.status.clone(),
        method: payout.method.clone(),
        transfer_id: payout.transfer_id.clone(),
        reference: payout.reference.clone(),
        failure_code: payout.failure_code.clone(),
        failure_message: payout.failure_message.clone(),
        commission_ids,
        paid_at: payout.paid_at.map(rfc3339),
    })
}

async fn announce(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    payout: &StoredPayout,
    event_type: &str,
    commission_ids: Vec<String>,
) -> anyhow::Result<()> {
    let data = announced(payout, commission_ids);
    outbox::emit(
        tx,
        handoff,
        &state.clock,
        &payout.tenant_id,
        event_type,
        data,
    )
    .await?;
    Ok(())
}

/// Pays a pending payout: it and its commissions are `paid`, `payout.paid` is announced.
/// Returns the payout as it now is; a payout no longer pending is left as it is.
pub async fn paid(
    state: &AppState,
    tenant_id: &str,
    payout_id: &str,
    how: Settled,
) -> anyhow::Result<Option<StoredPayout>> {
    let mut tx = state.db.write(tenant_id).await?;
    let Some(mut payout) = store::lock_payout(&mut tx, tenant_id, payout_id).await? else {
        return Ok(None);
    };
    if payout.status != "pending" {
        if let (Settled::Transfer(id), None) = (&how, &payout.transfer_id) {
            // Stripe confirmed a transfer for a payout that was settled otherwise meanwhile
            // (an overlapping run of its job): keep the transfer's id, and say so loudly.
            tracing::error!(payout = %payout.id, transfer = %id, status = %payout.status,
                "a transfer was confirmed for a payout that is no longer pending; reconcile it");
            payout.transfer_id = Some(id.clone());
            payout.updated_at = state.clock.now_ms();
            store::save_outcome(&mut tx, &payout).await?;
            tx.commit().await?;
        }
        return Ok(Some(payout));
    }
    let now = state.clock.now_ms();
    payout.status = "paid".to_owned();
    match how {
        Settled::Transfer(id) => payout.transfer_id = Some(id),
        Settled::Reference(reference) => payout.reference = Some(reference),
    }
    payout.paid_at = Some(now);
    payout.updated_at = now;
    store::save_outcome(&mut tx, &payout).await?;
    let commission_ids = commissions::store::settle(&mut tx, tenant_id, payout_id, now).await?;
    let mut handoff = state.queue.handoff();
    announce(
        state,
        &mut tx,
        &mut handoff,
        &payout,
        "payout.paid",
        commission_ids,
    )
    .await?;
    tx.commit().await?;
    handoff.start();
    Ok(Some(payout))
}

/// Fails a pending payout for good: its commissions and clawbacks are free for the next run,
/// `payout.failed` is announced.
pub async fn fail(
    state: &AppState,
    tenant_id: &str,
    payout_id: &str,
    failure: &Failure,
) -> anyhow::Result<()> {
    let mut tx = state.db.write(tenant_id).await?;
    let Some(mut payout) = store::lock_payout(&mut tx, tenant_id, payout_id).await? else {
        return Ok(());
    };
    if payout.status != "pending" {
        return Ok(());
    }
    tracing::warn!(payout = %payout.id, code = %failure.code, "a payout failed");
    let now = state.clock.now_ms();
    payout.status = "failed".to_owned();
    payout.failure_code = Some(failure.code.clone());
    payout.failure_message = Some(failure.message.clone());
    payout.updated_at = now;
    store::save_outcome(&mut tx, &payout).await?;
    let mut handoff = state.queue.handoff();
    let freed = free(state, &mut tx, &mut handoff, tenant_id, payout_id).await?;
    announce(
        state,
        &mut tx,
        &mut handoff,
        &payout,
        "payout.failed",
        freed,
    )
    .await?;
    tx.commit().await?;
    handoff.start();
    Ok(())
}

/// Frees a payout's commissions (approved again) and clawbacks; returns the commissions' ids.
/// A commission refunded while the payout held it was counted as paid; free again, it takes
/// its refund as any unpaid commission does (reversed, or its refunded share taken back).
async fn free(
    state: &AppState,
    tx: &mut Tx,
    handoff: &mut Handoff,
    tenant_id: &str,
    payout_id: &str,
) -> anyhow::Result<Vec<String>> {
    let held = commissions::store::of_payout(tx, tenant_id, payout_id).await?;
    commissions::store::release(tx, tenant_id, payout_id, state.clock.now_ms()).await?;
    store::release_adjustments(tx, tenant_id, payout_id).await?;
    let refunded: std::collections::BTreeSet<&str> = held
        .iter()
        .filter(|c| c.refunded_at.is_some())
        .map(|c| c.order_id.as_str())
        .collect();
    for order in refunded {
        crate::events::reapply_refunds(state, tx, handoff, tenant_id, order).await?;
    }
    Ok(held.into_iter().map(|c| c.id).collect())
}

/// Gives back what was clawed back of `commission`, which turned out unpaid (its payout failed
/// or was reversed) and now takes its refund itself: open clawbacks are dropped, and what a
/// payout already held back is credited to the partner's next payout.
pub async fn undo_claw_back(
    tx: &mut Tx,
    commission: &StoredCommission,
    now: i64,
) -> sqlx::Result<()> {
    let tenant = &commission.tenant_id;
    let held_back = store::drop_open_adjustments(tx, tenant, &commission.id).await?;
    if held_back > 0 {
        let credit = store::NewAdjustment {
            id: &ids::new("adj"),
            tenant_id: tenant,
            partner_id: &commission.partner_id,
            commission_id: &commission.id,
            currency: &commission.currency,
            amount: held_back,
            created_at: now,
        };
        store::insert_adjustment(tx, &credit).await?;
    }
    Ok(())
}

/// `transfer.reversed`: a fully reversed transfer reverses its paid payout, whose commissions
/// are approved again (`payout.reversed`). Returns what became of it, for the event's outcome;
/// `None` while its payout is still pending (Stripe's event overtook the transfer's answer).
pub async fn transfer_reversed(
    state: &AppState,
    tenant_id: &str,
    transfer: &Value,
) -> anyhow::Result<Option<&'static str>> {
    let Some(transfer_id) = transfer["id"].as_str() else {
        return Ok(Some("no_transfer"));
    };
    let mut tx = state.db.write(tenant_id).await?;
    let by_transfer = store::payout_of_transfer(&mut tx, tenant_id, transfer_id).await?;
    let payout_id = by_transfer.or_else(|| {
        transfer["metadata"]["payout_id"]
            .as_str()
            .filter(|id| ids::is_valid("pay", id))
            .map(str::to_owned)
    });
    let Some(payout_id) = payout_id else {
        return Ok(Some("unknown_transfer"));
    };
    let Some(mut payout) = store::lock_payout(&mut tx, tenant_id, &payout_id).await? else {
        return Ok(Some("unknown_transfer"));
    };
    if transfer["reversed"].as_bool() != Some(true) {
        return Ok(Some("partially_reversed"));
    }
    match payout.status.as_str() {
        "pending" => return Ok(None),
        "paid" if payout.transfer_id.as_deref() == Some(transfer_id) => {}
        "paid" => return Ok(Some("unknown_transfer")),
        _ => return Ok(Some("already_reversed")),
    }
    let now = state.clock.now_ms();
    payout.status = "reversed".to_owned();
    payout.updated_at = now;
    store::save_outcome(&mut tx, &payout).await?;
    let mut handoff = state.queue.handoff();
    let freed = free(state, &mut tx, &mut handoff, tenant_id, &payout_id).await?;
    announce(
        state,
        &mut tx,
        &mut handoff,
        &payout,
        "payout.reversed",
        freed,
    )
    .await?;
    tx.commit().await?;
    handoff.start();
    Ok(Some("payout_reversed"))
}

// ---------------------------------------------------------------------------------------------
// Balances

/// A partner's money in one currency (minor units). The books balance:
/// `paid + in_payouts + approved + pending + carried = accrued - reversed - clawed_back`.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct CurrencyBalance {
    pub currency: String,
    /// Every commission as accrued.
    pub accrued: i64,
    /// Taken back by refunds before payment (reversed commissions, partial refunds).
    pub reversed: i64,
    /// Commissions in their holdback.
    pub pending: i64,
    /// Approved and in no payout: the next run pays them (with `carried`).
    pub approved: i64,
    /// Pending payouts: on their way.
    pub in_payouts: i64,
    /// Clawbacks (negative) and credits no payout absorbed yet: the next payouts count them.
    pub carried: i64,
    /// Paid payouts.
    pub paid: i64,
    /// Refunds of paid commissions taken from later payouts, absorbed or not (positive).
    pub clawed_back: i64,
}

/// A partner's balance per currency.
pub async fn balance(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
) -> sqlx::Result<Vec<CurrencyBalance>> {
    let mut by_currency: BTreeMap<String, CurrencyBalance> = BTreeMap::new();
    for t in commissions::store::totals(tx, tenant_id, partner_id).await? {
        let b = by_currency.entry(t.currency.clone()).or_default();
        b.currency = t.currency.clone();
        b.accrued += t.amount;
        let net = t.amount - t.reversed_amount;
        match (t.status.as_str(), t.in_payout == 1) {
            ("reversed", _) => b.reversed += t.amount,
            ("pending", _) => {
                b.reversed += t.reversed_amount;
                b.pending += net;
            }
            ("approved", false) => {
                b.reversed += t.reversed_amount;
                b.approved += net;
            }
            _ => b.reversed += t.reversed_amount,
        }
    }
    for (currency, status, amount) in store::payout_totals(tx, tenant_id, partner_id).await? {
        let b = by_currency.entry(currency.clone()).or_default();
        b.currency = currency;
        match status.as_str() {
            "pending" => b.in_payouts += amount,
            "paid" => b.paid += amount,
            _ => {}
        }
    }
    for (currency, all, open) in store::adjustment_totals(tx, tenant_id, partner_id).await? {
        let b = by_currency.entry(currency.clone()).or_default();
        b.currency = currency;
        b.clawed_back = -all;
        b.carried = open;
    }
    Ok(by_currency.into_values().collect())
}
