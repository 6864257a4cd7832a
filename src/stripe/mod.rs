//! Stripe in: a tenant's Stripe settings, signed webhook events, and what each event becomes.
//!
//! Pointing Stripe at `POST /v1/stripe/webhook` (or `/t/{slug}/v1/stripe/webhook`) is the whole
//! integration. The tenant is the URL's, never taken from the event. The signature is checked
//! on the raw bytes ([`signature`]), the event is stored and its processing job enqueued in one
//! transaction, and Stripe gets its 200 at once. The job then feeds the same path as
//! `POST /v1/events` ([`crate::events::take`]) with the Stripe event id as `event_id`, so a
//! Stripe retry is a repeat and nothing more, and attribution, commissions and announcements
//! behave exactly as for any other conversion:
//!
//! - `checkout.session.completed` (and `checkout.session.async_payment_succeeded`, for delayed
//!   methods that complete `unpaid`): the click id in `client_reference_id` (or
//!   `metadata.switchyard_click_id`) ties the session's Stripe customer to that click's
//!   customer; `mode=payment` is a `purchase` of `amount_total` (order: the payment intent),
//!   `mode=subscription` a `signup` (its money comes with the invoices).
//! - `customer.subscription.created`: ties the customer through `metadata.switchyard_click_id`.
//! - `invoice.paid`: a `purchase` (the first invoice of a subscription, or a one-off) or a
//!   `renewal` (`billing_reason: subscription_cycle`) of `amount_paid`; order: the invoice. Stripe
//!   does not order its deliveries, so while the customer is unknown the job waits (up to an
//!   hour after the event arrived) for the checkout that names it.
//! - `charge.refunded`: a `refund` of the charge's order (its invoice, else the invoice its
//!   payment intent paid, from `invoice_payment.paid`, else the payment intent) given as the
//!   charge's running `amount_refunded`; a partial refund takes the refunded share of the
//!   commissions back, a full one reverses them. `charge.dispute.closed` lost: a refund of the
//!   disputed amount. An opened dispute is recorded and reverses nothing (disputes can be won).
//! - `account.updated` (from the Connect destination) keeps a partner's payout account's
//!   readiness current; `transfer.reversed` reverses the paid payout of a fully reversed
//!   transfer (see [`crate::payouts`]).
//! - `invoice.payment_failed` and `invoice_payment.paid` are recorded; other
//!   types are ignored, as are events whose `livemode` differs from the configured key's mode
//!   and connected accounts' events other than `account.updated` (ADR 11).

pub mod client;
pub mod meters;
pub mod routes;
pub mod signature;
mod store;

use std::time::Duration;

use job_queue::{Job, KindOptions, NewJob, Outcome, RetrySchedule, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::db::Tx;
use crate::events::{self, EventResult, Taken};
use crate::http::error::Error;
use crate::identities::{self, Namespace};
use crate::ids;

pub use store::StoredEvent;

/// The job that turns a stored event into what it means.
pub const PROCESS: &str = "stripe.process";
/// How long an `invoice.paid` waits for its customer to become known (and a
/// `transfer.reversed` for its payout to be recorded paid).
const WAIT_FOR_CUSTOMER_MS: i64 = 3600 * 1000;
/// Most signing secrets of one kind a tenant may configure (Stripe rolls keep two at once).
pub const MAX_SECRETS: usize = 10;

/// A tenant's Stripe settings, secrets open (never shown, never logged).
#[derive(Clone, Default)]
pub struct Settings {
    pub secret_key: Option<String>,
    pub webhook_secrets: Vec<String>,
    pub connect_webhook_secrets: Vec<String>,
    pub updated_at: Option<i64>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("has_secret_key", &self.secret_key.is_some())
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field(
                "connect_webhook_secrets",
                &self.connect_webhook_secrets.len(),
            )
            .finish()
    }
}

impl Settings {
    /// `test` or `live`, from the key's prefix (`sk_test_`, `rk_live_`, ...).
    pub fn key_mode(&self) -> Option<&'static str> {
        self.secret_key.as_deref().and_then(key_mode)
    }

    /// Every secret a signature may match.
    fn signing_secrets(&self) -> Vec<String> {
        self.webhook_secrets
            .iter()
            .chain(&self.connect_webhook_secrets)
            .cloned()
            .collect()
    }
}

/// The mode of a Stripe secret or restricted key, `None` when it is not one.
pub fn key_mode(key: &str) -> Option<&'static str> {
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let rest = key
        .strip_prefix("sk_")
        .or_else(|| key.strip_prefix("rk_"))?;
    match rest.split_once('_') {
        Some(("test", secret)) if !secret.is_empty() => Some("test"),
        Some(("live", secret)) if !secret.is_empty() => Some("live"),
        _ => None,
    }
}

/// The settings of the tenant `tenant_id` (of slug `slug`): what `PUT /v1/stripe` stored, and
/// for the default tenant the `STRIPE_SECRET_KEY` / `STRIPE_WEBHOOK_SECRETS` configuration
/// beside it.
pub async fn settings(
    state: &AppState,
    tx: &mut Tx,
    tenant_id: &str,
    slug: &str,
) -> anyhow::Result<Settings> {
    let mut settings = match store::settings(tx, tenant_id).await? {
        Some(stored) => Settings {
            secret_key: match &stored.secret_key_sealed {
                Some(sealed) => Some(state.secrets.open(sealed)?),
                None => None,
            },
            webhook_secrets: serde_json::from_str(
                &state.secrets.open(&stored.webhook_secrets_sealed)?,
            )?,
            connect_webhook_secrets: serde_json::from_str(
                &state.secrets.open(&stored.connect_secrets_sealed)?,
            )?,
            updated_at: Some(stored.updated_at),
        },
        None => Settings::default(),
    };
    if slug == crate::tenants::DEFAULT_SLUG {
        if settings.secret_key.is_none() {
            settings.secret_key = state.config.stripe_secret_key.clone();
        }
        for secret in &state.config.stripe_webhook_secrets {
            if !secret.is_empty() && !settings.webhook_secrets.contains(secret) {
                settings.webhook_secrets.push(secret.clone());
            }
        }
    }
    Ok(settings)
}

/// Stores the tenant's settings, sealed.
pub async fn save_settings(
    state: &AppState,
    tx: &mut Tx,
    tenant_id: &str,
    settings: &Settings,
) -> sqlx::Result<()> {
    let seal_list = |list: &[String]| {
        state
            .secrets
            .seal(&serde_json::to_string(list).expect("strings serialize"))
    };
    let stored = store::StoredSettings {
        secret_key_sealed: settings
            .secret_key
            .as_deref()
            .map(|k| state.secrets.seal(k)),
        key_mode: settings.key_mode().map(str::to_owned),
        key_last4: settings
            .secret_key
            .as_deref()
            .map(|k| k[k.len().saturating_sub(4)..].to_owned()),
        webhook_secrets_sealed: seal_list(&settings.webhook_secrets),
        connect_secrets_sealed: seal_list(&settings.connect_webhook_secrets),
        updated_at: state.clock.now_ms(),
    };
    store::save_settings(tx, tenant_id, &stored).await
}

/// What the accept path did with a verified delivery.
pub enum Accepted {
    New(StoredEvent),
    /// Stripe sent this event id before: nothing was added.
    Repeat,
}

/// The envelope fields of a Stripe event.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    livemode: bool,
    account: Option<String>,
    #[serde(default)]
    data: Value,
}

/// Why an event is stored as `ignored` rather than processed, if it is: a mode other than the
/// key's (test data must not earn live commissions), or a connected account's event other than
/// `account.updated` (its payments are the connected account's, not this program's).
fn ignored_because(
    settings: &Settings,
    livemode: bool,
    account: Option<&str>,
    event_type: &str,
) -> Option<Value> {
    let mode = if livemode { "live" } else { "test" };
    if settings.key_mode().is_some_and(|key| key != mode) {
        return Some(json!({"reason": "livemode_mismatch",
            "detail": format!("a {mode}-mode event, and the configured key is not")}));
    }
    if account.is_some() && event_type != "account.updated" {
        return Some(json!({"reason": "connected_account_event",
            "detail": "a connected account's event; only account.updated is used"}));
    }
    None
}

/// What an event is found by: its object's id, except that an invoice payment is found by the
/// payment intent that paid the invoice (refunds and disputes name only that).
fn object_id(event_type: &str, object: &Value) -> Option<String> {
    let id = match event_type {
        t if t.starts_with("invoice_payment.") => text(&object["payment"], "payment_intent"),
        _ => text(object, "id"),
    };
    id.map(str::to_owned)
}

/// Stores a verified event and enqueues its processing in one transaction. `body` is the raw
/// JSON Stripe signed.
pub async fn accept(
    state: &AppState,
    tenant_id: &str,
    settings: &Settings,
    body: &[u8],
) -> Result<Accepted, Error> {
    let envelope: Envelope = serde_json::from_slice(body)
        .ok()
        .filter(|e: &Envelope| {
            e.id.starts_with("evt_") && e.id.len() <= 255 && !e.event_type.is_empty()
        })
        .ok_or_else(|| Error::BadRequest {
            code: "invalid_event",
            detail: "the body is not a Stripe event (id evt_..., type)".to_owned(),
        })?;
    let payload = std::str::from_utf8(body)
        .map_err(|_| Error::BadRequest {
            code: "invalid_event",
            detail: "the body is not UTF-8".to_owned(),
        })?
        .to_owned();
    let now = state.clock.now_ms();
    let ignored = ignored_because(
        settings,
        envelope.livemode,
        envelope.account.as_deref(),
        &envelope.event_type,
    );
    let skip = ignored.is_some();
    let event_type = envelope.event_type.clone();
    let event = StoredEvent {
        id: envelope.id,
        event_type: event_type.clone(),
        livemode: i64::from(envelope.livemode),
        account: envelope.account,
        object_id: object_id(&event_type, &envelope.data["object"]),
        payload,
        received_at: now,
        state: if skip { "ignored" } else { "received" }.to_owned(),
        outcome: ignored.map(|outcome| outcome.to_string()),
        updated_at: now,
    };
    let mut tx = state.db.write(tenant_id).await?;
    if !store::insert_event(&mut tx, tenant_id, &event).await? {
        return Ok(Accepted::Repeat);
    }
    let mut handoff = state.queue.handoff();
    if !skip {
        enqueue(&mut handoff, &mut tx, tenant_id, &event.id, &event.id).await?;
    }
    tx.commit().await?;
    handoff.start();
    Ok(Accepted::New(event))
}

async fn enqueue(
    handoff: &mut job_queue::Handoff,
    tx: &mut Tx,
    tenant_id: &str,
    event_id: &str,
    dedupe: &str,
) -> Result<(), Error> {
    let mut job = NewJob::new(
        PROCESS,
        json!({"tenant_id": tenant_id, "event_id": event_id}),
    );
    job.dedupe_key = Some(format!("stripe:{tenant_id}:{dedupe}"));
    handoff
        .enqueue_in(tx, job)
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    Ok(())
}

/// Processes a stored event again: it goes back to `received` with a job of its own.
pub async fn reprocess(
    state: &AppState,
    tenant_id: &str,
    slug: &str,
    event_id: &str,
) -> Result<StoredEvent, Error> {
    let mut tx = state.db.write(tenant_id).await?;
    let mut event = store::find_event(&mut tx, tenant_id, event_id)
        .await?
        .ok_or_else(|| Error::not_found("Stripe event"))?;
    let settings = settings(state, &mut tx, tenant_id, slug).await?;
    if let Some(why) = ignored_because(
        &settings,
        event.livemode != 0,
        event.account.as_deref(),
        &event.event_type,
    ) {
        return Err(Error::Conflict {
            code: "stripe_event_ignored",
            detail: why["detail"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let now = state.clock.now_ms();
    event.state = "received".to_owned();
    event.outcome = None;
    event.updated_at = now;
    sqlx::query(
        "UPDATE stripe_events SET state = 'received', outcome = NULL, updated_at = $1
         WHERE tenant_id = $2 AND id = $3",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    let mut handoff = state.queue.handoff();
    let dedupe = format!("{event_id}:{}", ids::new("rep"));
    enqueue(&mut handoff, &mut tx, tenant_id, event_id, &dedupe).await?;
    tx.commit().await?;
    handoff.start();
    Ok(event)
}

pub use store::{find_event, list_events};

/// Registers the processing job on `worker`. Events process eight at a time: refunds of one
/// order meet under its commissions' lock, and count a charge's running total once, so their
/// order does not matter.
pub fn register(worker: Worker, state: AppState) -> Worker {
    let lease = Duration::from_secs(state.config.job_lease_secs);
    worker.register(
        PROCESS,
        KindOptions {
            concurrency: 8,
            schedule: RetrySchedule::default(),
            lease,
        },
        move |job: Job| {
            let state = state.clone();
            async move {
                let Ok(payload) = serde_json::from_value::<ProcessPayload>(job.payload) else {
                    return Outcome::Fail("malformed Stripe event job payload".to_owned());
                };
                match process(&state, &payload.tenant_id, &payload.event_id).await {
                    Ok(outcome) => outcome,
                    Err(err) if job.attempt >= job.max_attempts => {
                        // The job is spent: the event says so, instead of `received`.
                        let error = format!("{err:#}");
                        let outcome = json!({"reason": "processing_failed", "error": error});
                        if let Err(err) = fail(&state, &payload, &outcome).await {
                            tracing::error!(error = %err, "a failed Stripe event could not be marked failed");
                        }
                        Outcome::Fail(format!("processing a Stripe event failed: {error}"))
                    }
                    Err(err) => Outcome::retry(format!("processing a Stripe event failed: {err:#}")),
                }
            }
        },
    )
}

async fn fail(state: &AppState, payload: &ProcessPayload, outcome: &Value) -> sqlx::Result<()> {
    let mut tx = state.db.write(&payload.tenant_id).await?;
    store::set_outcome(
        &mut tx,
        &payload.tenant_id,
        &payload.event_id,
        "failed",
        &outcome.to_string(),
        state.clock.now_ms(),
    )
    .await?;
    tx.commit().await
}

#[derive(Deserialize)]
struct ProcessPayload {
    tenant_id: String,
    event_id: String,
}

/// What an event became.
#[derive(Debug, Serialize)]
struct Resolution {
    /// `processed`, `unattributed`, `recorded`, `ignored` or `failed`.
    state: &'static str,
    outcome: Value,
}

impl Resolution {
    fn new(state: &'static str, outcome: Value) -> Self {
        Self { state, outcome }
    }

    fn recorded(reason: &str) -> Self {
        Self::new("recorded", json!({ "reason": reason }))
    }
}

/// Either a resolution, or "not yet": run again after the delay.
enum Step {
    Resolved(Resolution),
    Wait(Duration),
}

async fn process(state: &AppState, tenant_id: &str, event_id: &str) -> anyhow::Result<Outcome> {
    let mut tx = state.db.read(tenant_id).await?;
    let Some(event) = store::find_event(&mut tx, tenant_id, event_id).await? else {
        return Ok(Outcome::Fail(format!("Stripe event {event_id} not found")));
    };
    tx.commit().await?;
    if event.state != "received" {
        return Ok(Outcome::Done);
    }
    let payload: Value = serde_json::from_str(&event.payload)?;
    let object = &payload["data"]["object"];
    let occurred_at = payload["created"]
        .as_i64()
        .map(|secs| rfc3339(secs.saturating_mul(1000)));
    let source = Source {
        state,
        tenant_id,
        event: &event,
        occurred_at,
    };
    let step = match event.event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            source.checkout(object).await?
        }
        "customer.subscription.created" => source.subscription_created(object).await?,
        "invoice.paid" => source.invoice_paid(object).await?,
        "charge.refunded" => source.charge_refunded(object).await?,
        "charge.dispute.closed" => source.dispute_closed(object).await?,
        "charge.dispute.created" => Step::Resolved(Resolution::recorded("dispute_opened")),
        "invoice.payment_failed" => Step::Resolved(Resolution::recorded("payment_failed")),
        // Kept for refunds: which invoice a payment intent paid.
        "invoice_payment.paid" => Step::Resolved(Resolution::recorded("invoice_payment")),
        "account.updated" => {
            let known = crate::payouts::account_updated(state, tenant_id, object).await?;
            let reason = if known {
                "payout_account_updated"
            } else {
                "unknown_account"
            };
            Step::Resolved(Resolution::recorded(reason))
        }
        "transfer.reversed" => {
            match crate::payouts::transfer_reversed(state, tenant_id, object).await? {
                Some(became) => Step::Resolved(Resolution::recorded(became)),
                // The transfer's answer has not been recorded yet: wait for it, a while.
                None if state.clock.now_ms() - event.received_at < WAIT_FOR_CUSTOMER_MS => {
                    Step::Wait(Duration::from_secs(30))
                }
                None => Step::Resolved(Resolution::recorded("payout_not_paid")),
            }
        }
        _ => Step::Resolved(Resolution::new(
            "ignored",
            json!({"reason": "unhandled_type"}),
        )),
    };
    let resolution = match step {
        Step::Resolved(resolution) => resolution,
        Step::Wait(delay) => return Ok(Outcome::Snooze(delay)),
    };
    let mut tx = state.db.write(tenant_id).await?;
    store::set_outcome(
        &mut tx,
        tenant_id,
        event_id,
        resolution.state,
        &resolution.outcome.to_string(),
        state.clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Done)
}

/// One event being processed.
struct Source<'a> {
    state: &'a AppState,
    tenant_id: &'a str,
    event: &'a StoredEvent,
    occurred_at: Option<String>,
}

/// A string field of a Stripe object; `None` when absent, null or empty. Expandable fields
/// (`customer`, `subscription`, ...) may arrive expanded as objects: their `id` is taken.
fn text<'v>(object: &'v Value, field: &str) -> Option<&'v str> {
    let value = &object[field];
    value
        .as_str()
        .or_else(|| value["id"].as_str())
        .filter(|s| !s.is_empty())
}

/// A click id from a Stripe object's `metadata.switchyard_click_id`.
fn metadata_click(object: &Value) -> Option<&str> {
    text(&object["metadata"], "switchyard_click_id")
}

impl Source<'_> {
    /// Feeds a conversion to `POST /v1/events`'s path; `fields` are the event's own (type,
    /// amount, order, click, identities). A click that does not exist leaves the conversion
    /// unattributed rather than failing it.
    async fn convert(&self, fields: Value) -> anyhow::Result<Step> {
        self.convert_in_group(fields, None).await
    }

    /// [`Self::convert`] for a refund given as the running total of `refund_group`.
    async fn convert_in_group(
        &self,
        mut fields: Value,
        refund_group: Option<&str>,
    ) -> anyhow::Result<Step> {
        fields["event_id"] = json!(self.event.id);
        if let Some(at) = &self.occurred_at {
            fields["occurred_at"] = json!(at);
        }
        fields["metadata"] = json!({"stripe_event_type": self.event.event_type});
        let mut notes = Vec::new();
        loop {
            let taken =
                events::take_in_group(self.state, self.tenant_id, fields.clone(), refund_group);
            match taken.await {
                Ok(Taken::New(result) | Taken::Repeat(result)) => {
                    return Ok(Step::Resolved(converted(result, notes)))
                }
                Err(Error::NotFound {
                    code: "click_not_found",
                    ..
                }) if fields.get("click_id").is_some() => {
                    notes.push("unknown_click");
                    fields
                        .as_object_mut()
                        .expect("an object")
                        .remove("click_id");
                }
                Err(Error::Conflict {
                    code: "event_id_conflict",
                    ..
                }) => {
                    // Reprocessed after it became a conversion with other facts: that stands.
                    return Ok(Step::Resolved(Resolution::new(
                        "processed",
                        json!({"reason": "already_converted"}),
                    )));
                }
                Err(Error::Validation(errors)) => {
                    return Ok(Step::Resolved(Resolution::new(
                        "failed",
                        json!({"reason": "invalid_conversion", "errors": errors}),
                    )))
                }
                Err(err) => return Err(anyhow::anyhow!("{err}")),
            }
        }
    }

    /// Ties `customer` (a Stripe customer id) to the customer of `click`. Returns notes when
    /// that could not be done (an unknown click, a customer already tied elsewhere).
    async fn tie(
        &self,
        customer: Option<&str>,
        click: &str,
    ) -> anyhow::Result<Option<&'static str>> {
        let pairs: Vec<(Namespace, String)> = customer
            .map(|c| vec![(Namespace::StripeCustomer, c.to_owned())])
            .unwrap_or_default();
        if !ids::is_valid("clk", click) {
            return Ok(Some("unknown_click"));
        }
        self.state.links.flush().await;
        let mut tx = self.state.db.write(self.tenant_id).await?;
        let now = self.state.clock.now_ms();
        match identities::bind(&mut tx, self.tenant_id, &pairs, Some(click), None, now).await {
            Ok(_) => {
                tx.commit().await?;
                Ok(None)
            }
            Err(Error::NotFound { .. }) => Ok(Some("unknown_click")),
            Err(Error::Conflict { .. }) => Ok(Some("identity_conflict")),
            Err(err) => Err(anyhow::anyhow!("{err}")),
        }
    }

    async fn checkout(&self, session: &Value) -> anyhow::Result<Step> {
        // A delayed payment method (SEPA, ACH) completes the session unpaid: the money, and the
        // conversion, come with `checkout.session.async_payment_succeeded`.
        if session["payment_status"].as_str() == Some("unpaid") {
            return Ok(Step::Resolved(Resolution::recorded("awaiting_payment")));
        }
        let click = text(session, "client_reference_id").or_else(|| metadata_click(session));
        let customer = text(session, "customer");
        let mut notes = Vec::new();
        if let Some(click) = click {
            notes.extend(self.tie(customer, click).await?);
        }
        let click = click.filter(|_| !notes.contains(&"unknown_click"));
        let identities = customer.map(|c| json!({"stripe_customer": c}));
        let session_id = text(session, "id").unwrap_or(&self.event.id);
        let fields = match text(session, "mode") {
            Some("payment") => json!({
                "type": "purchase",
                "amount": session["amount_total"],
                "currency": session["currency"],
                "order_id": text(session, "payment_intent").unwrap_or(session_id),
                "click_id": click,
                "identities": identities,
            }),
            Some("subscription") => json!({
                "type": "signup",
                "order_id": text(session, "subscription").unwrap_or(session_id),
                "click_id": click,
                "identities": identities,
            }),
            _ => {
                return Ok(Step::Resolved(Resolution::recorded(
                    "no_payment_in_session",
                )))
            }
        };
        let step = self.convert(without_nulls(fields)).await?;
        Ok(with_notes(step, &notes))
    }

    async fn subscription_created(&self, subscription: &Value) -> anyhow::Result<Step> {
        let Some(click) = metadata_click(subscription) else {
            return Ok(Step::Resolved(Resolution::recorded("no_click")));
        };
        let note = self.tie(text(subscription, "customer"), click).await?;
        Ok(Step::Resolved(match note {
            Some(note) => Resolution::new("unattributed", json!({ "reason": note })),
            None => Resolution::new("processed", json!({"tied_click_id": click})),
        }))
    }

    async fn invoice_paid(&self, invoice: &Value) -> anyhow::Result<Step> {
        let customer = text(invoice, "customer");
        // The subscription's metadata rides on the invoice: `parent.subscription_details` since
        // API version 2025-03-31, `subscription_details` before.
        let click = metadata_click(&invoice["parent"]["subscription_details"])
            .or_else(|| metadata_click(&invoice["subscription_details"]))
            .or_else(|| metadata_click(invoice));
        let mut notes = Vec::new();
        if let Some(click) = click {
            notes.extend(self.tie(customer, click).await?);
        }
        let amount = invoice["amount_paid"].as_i64().unwrap_or(0);
        if amount == 0 {
            return Ok(Step::Resolved(Resolution::recorded("zero_amount")));
        }
        if let Some(customer) = customer.filter(|_| notes.is_empty() && click.is_none()) {
            let mut tx = self.state.db.read(self.tenant_id).await?;
            let known = identities::find_subject(
                &mut tx,
                self.tenant_id,
                Namespace::StripeCustomer,
                customer,
                Some("customer"),
            )
            .await?
            .is_some();
            tx.commit().await?;
            let waited = self.state.clock.now_ms() - self.event.received_at;
            if !known && waited < WAIT_FOR_CUSTOMER_MS {
                // The checkout naming this customer may simply not have arrived yet.
                let delay = Duration::from_millis((waited / 2).clamp(2_000, 600_000) as u64);
                return Ok(Step::Wait(delay));
            }
        }
        let renewal = invoice["billing_reason"].as_str() == Some("subscription_cycle");
        let fields = json!({
            "type": if renewal { "renewal" } else { "purchase" },
            "amount": amount,
            "currency": invoice["currency"],
            "order_id": text(invoice, "id").unwrap_or(&self.event.id),
            "identities": customer.map(|c| json!({"stripe_customer": c})),
        });
        let step = self.convert(without_nulls(fields)).await?;
        Ok(with_notes(step, &notes))
    }

    /// Stripe's `amount_refunded` is the charge's running total: it is given as such (grouped by
    /// the charge), so the order's refunded amount counts the largest total the charge's events
    /// brought, whatever order they arrive in and however often.
    async fn charge_refunded(&self, charge: &Value) -> anyhow::Result<Step> {
        let total = charge["amount_refunded"].as_i64().unwrap_or(0);
        self.refund(charge, total, text(charge, "id")).await
    }

    async fn dispute_closed(&self, dispute: &Value) -> anyhow::Result<Step> {
        if dispute["status"].as_str() != Some("lost") {
            return Ok(Step::Resolved(Resolution::recorded("dispute_not_lost")));
        }
        let amount = dispute["amount"].as_i64().unwrap_or(0);
        self.refund(dispute, amount, text(dispute, "id")).await
    }

    /// A `refund` of the order a charge (or dispute) paid: its invoice, else the invoice its
    /// payment intent paid (from `invoice_payment.paid`: since API version 2025-03-31 charges
    /// no longer name their invoice, and disputes never did), else the payment intent.
    async fn refund(
        &self,
        object: &Value,
        amount: i64,
        group: Option<&str>,
    ) -> anyhow::Result<Step> {
        let intent = text(object, "payment_intent");
        let paid_invoice = match intent {
            Some(intent) => {
                let mut tx = self.state.db.read(self.tenant_id).await?;
                let found = store::invoice_paid_by(&mut tx, self.tenant_id, intent).await?;
                tx.commit().await?;
                found
            }
            None => None,
        };
        let Some(order) = text(object, "invoice")
            .map(str::to_owned)
            .or(paid_invoice)
            .or_else(|| intent.map(str::to_owned))
            .or_else(|| text(object, "charge").map(str::to_owned))
        else {
            return Ok(Step::Resolved(Resolution::recorded("no_order")));
        };
        let fields = json!({
            "type": "refund",
            "amount": amount,
            "currency": object["currency"],
            "order_id": order,
        });
        self.convert_in_group(without_nulls(fields), group).await
    }
}

fn converted(result: EventResult, notes: Vec<&str>) -> Resolution {
    let touched = !(result.reversed_commission_ids.is_empty()
        && result.adjusted_commission_ids.is_empty()
        && result.refunded_paid_commission_ids.is_empty());
    let state = if result.attribution.is_some() || touched {
        "processed"
    } else {
        "unattributed"
    };
    let mut outcome = json!({ "conversion": result });
    if !notes.is_empty() {
        outcome["notes"] = json!(notes);
    }
    Resolution::new(state, outcome)
}

fn with_notes(step: Step, notes: &[&str]) -> Step {
    match step {
        Step::Resolved(mut resolution) if !notes.is_empty() => {
            let mut all: Vec<Value> = resolution.outcome["notes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for note in notes {
                if !all.contains(&json!(note)) {
                    all.push(json!(note));
                }
            }
            resolution.outcome["notes"] = Value::Array(all);
            Step::Resolved(resolution)
        }
        other => other,
    }
}

/// Drops the null fields of an object, so optional facts a Stripe object lacks stay absent.
fn without_nulls(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_says_its_mode() {
        assert_eq!(key_mode("sk_test_51H"), Some("test"));
        assert_eq!(key_mode("rk_live_51H"), Some("live"));
        assert_eq!(key_mode("pk_test_51H"), None);
        assert_eq!(key_mode("sk_test_"), None);
        assert_eq!(key_mode("sk_prod_51H"), None);
    }

    #[test]
    fn expandable_fields_give_their_id() {
        let object = json!({"customer": {"id": "cus_1"}, "invoice": "in_1", "charge": ""});
        assert_eq!(text(&object, "customer"), Some("cus_1"));
        assert_eq!(text(&object, "invoice"), Some("in_1"));
        assert_eq!(text(&object, "charge"), None);
        assert_eq!(text(&object, "missing"), None);
    }
}
