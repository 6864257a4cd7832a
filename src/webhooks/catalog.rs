//! The event catalog: every type an endpoint can subscribe to, with the JSON Schema of its
//! `data` (generated from the Rust type that later slices emit) and an example.
//!
//! The examples double as the synthetic payloads of test fires, tagged `"_synthetic": true`.

use schemars::{schema_for, JsonSchema, Schema};
use serde::Serialize;
use serde_json::{json, Value};

/// `partner.created`, `partner.activated`, `partner.revoked`.
#[derive(Serialize, JsonSchema)]
pub struct PartnerEvent {
    pub partner_id: String,
    pub email: String,
    pub name: String,
    /// `active` or `revoked`.
    pub status: String,
    /// `direct` or `network`.
    pub source: String,
    /// Why the partner was revoked (`partner.revoked` only).
    pub reason: Option<String>,
    /// Whether the revoking admin wants the partner told (`partner.revoked` only). Switchyard
    /// sends no mail itself: a subscriber (a Zap, a flow) acts on this.
    pub notify: Option<bool>,
    /// RFC 3339.
    pub created_at: String,
}

/// `partnership.approved`: a partner that came from the Network was approved.
#[derive(Serialize, JsonSchema)]
pub struct PartnershipEvent {
    pub partner_id: String,
    pub network_partner_id: String,
    pub approved_at: String,
}

/// `attribution.created`: a conversion event was tied to a partner's click.
#[derive(Serialize, JsonSchema)]
pub struct AttributionEvent {
    pub attribution_id: String,
    pub event_id: String,
    pub event_type: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub click_id: String,
    pub customer_id: Option<String>,
    pub created_at: String,
}

/// `commission.accrued`, `commission.approved`, `commission.adjusted`, `commission.reversed`.
#[derive(Serialize, JsonSchema)]
pub struct CommissionEvent {
    pub commission_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub event_id: String,
    /// The click the conversion was attributed to.
    pub click_id: String,
    /// Stable per conversion, so receivers can deduplicate.
    pub transaction_id: String,
    /// Minor units of `currency`, as accrued.
    pub amount: i64,
    /// What partial refunds took back (minor units): it pays `amount - reversed_amount`.
    pub reversed_amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// `pending`, `approved`, `reversed` or `paid`.
    pub status: String,
    /// The payout that holds or paid it, if any.
    pub payout_id: Option<String>,
    pub created_at: String,
}

/// `payout.paid`, `payout.failed`, `payout.reversed`.
#[derive(Serialize, JsonSchema)]
pub struct PayoutEvent {
    pub payout_id: String,
    pub partner_id: String,
    pub run_id: String,
    /// Minor units of `currency`: what the partner is paid (its commissions less clawbacks).
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// `paid`, `failed` or `reversed`.
    pub status: String,
    /// `stripe_connect` or `manual`.
    pub method: String,
    /// The Stripe transfer (`tr_...`), for Connect payouts.
    pub transfer_id: Option<String>,
    /// The admin's reference, for payouts marked paid by hand.
    pub reference: Option<String>,
    /// Why it failed (`payout.failed`): a stable code and Stripe's message.
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// The commissions it paid (`payout.paid`) or freed for the next run.
    pub commission_ids: Vec<String>,
    pub paid_at: Option<String>,
}

/// `webhook.test`: a ping.
#[derive(Serialize, JsonSchema)]
pub struct TestEvent {
    pub message: String,
}

fn payout_example() -> Value {
    json!(PayoutEvent {
        payout_id: "pay_01JB3Z5R6S7T8V9W0X1Y2Z3A4B".to_owned(),
        partner_id: "ptr_01JB3Z2Q6W8X4Y5V7T9S1R3P5N".to_owned(),
        run_id: "run_01JB3Z5Q2W3E4R5T6Y7V8M9N0P".to_owned(),
        amount: 8400,
        currency: "EUR".to_owned(),
        status: "paid".to_owned(),
        method: "stripe_connect".to_owned(),
        transfer_id: Some("tr_1QZ3sdLkdIwHu7ix0Bq8Ylmt".to_owned()),
        reference: None,
        failure_code: None,
        failure_message: None,
        commission_ids: vec!["com_01JB3Z4K8M2N6P0Q4R8S2T6V0W".to_owned()],
        paid_at: Some("2026-12-01T08:00:00.000Z".to_owned()),
    })
}

/// One entry of the catalog.
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: fn() -> Schema,
    pub example: fn() -> Value,
}

fn partner_example() -> Value {
    json!(PartnerEvent {
        partner_id: "ptr_01JB3Z2Q6W8X4Y5V7T9S1R3P5N".to_owned(),
        email: "ada@example.com".to_owned(),
        name: "Ada Lovelace".to_owned(),
        status: "active".to_owned(),
        source: "direct".to_owned(),
        reason: None,
        notify: None,
        created_at: "2026-11-01T09:30:00.000Z".to_owned(),
    })
}

fn commission_example() -> Value {
    json!(CommissionEvent {
        commission_id: "com_01JB3Z4K8M2N6P0Q4R8S2T6V0W".to_owned(),
        partner_id: "ptr_01JB3Z2Q6W8X4Y5V7T9S1R3P5N".to_owned(),
        campaign_id: "cmp_01JB3Z1A2B3C4D5E6F7G8H9J0K".to_owned(),
        event_id: "evt_crm_4711".to_owned(),
        click_id: "clk_01JB3Z3C5D7E9F1G3H5J7K9M1N".to_owned(),
        transaction_id: "txn_01JB3Z4K8M2N6P0Q4R8S2T6V0W".to_owned(),
        amount: 1250,
        reversed_amount: 0,
        currency: "EUR".to_owned(),
        payout_id: None,
        status: "pending".to_owned(),
        created_at: "2026-11-02T14:00:00.000Z".to_owned(),
    })
}

pub const CATALOG: &[EventType] = &[
    EventType {
        name: "partner.created",
        description: "A partner was created",
        schema: || schema_for!(PartnerEvent),
        example: partner_example,
    },
    EventType {
        name: "partner.activated",
        description: "A partner became active",
        schema: || schema_for!(PartnerEvent),
        example: partner_example,
    },
    EventType {
        name: "partner.revoked",
        description: "A partner was revoked",
        schema: || schema_for!(PartnerEvent),
        example: || {
            let mut example = partner_example();
            example["status"] = json!("revoked");
            example["reason"] = json!("fraudulent traffic");
            example
        },
    },
    EventType {
        name: "partnership.approved",
        description: "A partner from the Network was approved",
        schema: || schema_for!(PartnershipEvent),
        example: || {
            json!(PartnershipEvent {
                partner_id: "ptr_01JB3Z2Q6W8X4Y5V7T9S1R3P5N".to_owned(),
                network_partner_id: "net_8841".to_owned(),
                approved_at: "2026-11-01T10:00:00.000Z".to_owned(),
            })
        },
    },
    EventType {
        name: "attribution.created",
        description: "A conversion was attributed to a partner",
        schema: || schema_for!(AttributionEvent),
        example: || {
            json!(AttributionEvent {
                attribution_id: "atr_01JB3Z3D4E5F6G7H8J9K0M1N2P".to_owned(),
                event_id: "evt_crm_4711".to_owned(),
                event_type: "opportunity_won".to_owned(),
                partner_id: "ptr_01JB3Z2Q6W8X4Y5V7T9S1R3P5N".to_owned(),
                campaign_id: "cmp_01JB3Z1A2B3C4D5E6F7G8H9J0K".to_owned(),
                click_id: "clk_01JB3Z2Z9Y8X7W6V5T4S3R2Q1P".to_owned(),
                customer_id: Some("cus_991".to_owned()),
                created_at: "2026-11-02T14:00:00.000Z".to_owned(),
            })
        },
    },
    EventType {
        name: "commission.accrued",
        description: "A commission was accrued",
        schema: || schema_for!(CommissionEvent),
        example: commission_example,
    },
    EventType {
        name: "commission.approved",
        description: "A commission passed its holdback and was approved",
        schema: || schema_for!(CommissionEvent),
        example: || {
            let mut example = commission_example();
            example["status"] = json!("approved");
            example
        },
    },
    EventType {
        name: "commission.adjusted",
        description: "A partial refund took its share of a commission back (reversed_amount)",
        schema: || schema_for!(CommissionEvent),
        example: || {
            let mut example = commission_example();
            example["reversed_amount"] = json!(313);
            example
        },
    },
    EventType {
        name: "commission.reversed",
        description: "A commission was reversed by a refund",
        schema: || schema_for!(CommissionEvent),
        example: || {
            let mut example = commission_example();
            example["status"] = json!("reversed");
            example
        },
    },
    EventType {
        name: "payout.paid",
        description: "A payout was paid: its transfer succeeded, or an admin marked it paid",
        schema: || schema_for!(PayoutEvent),
        example: payout_example,
    },
    EventType {
        name: "payout.failed",
        description: "A payout failed for good; its commissions are free for the next run",
        schema: || schema_for!(PayoutEvent),
        example: || {
            let mut example = payout_example();
            example["status"] = json!("failed");
            example["transfer_id"] = Value::Null;
            example["paid_at"] = Value::Null;
            example["failure_code"] = json!("balance_insufficient");
            example["failure_message"] =
                json!("You have insufficient available funds in your Stripe account.");
            example
        },
    },
    EventType {
        name: "payout.reversed",
        description: "A paid payout's transfer was reversed; its commissions are approved again",
        schema: || schema_for!(PayoutEvent),
        example: || {
            let mut example = payout_example();
            example["status"] = json!("reversed");
            example
        },
    },
    EventType {
        name: "webhook.test",
        description: "A test ping",
        schema: || schema_for!(TestEvent),
        example: || {
            json!(TestEvent {
                message: "Hello from Switchyard".to_owned(),
            })
        },
    },
];

pub fn find(name: &str) -> Option<&'static EventType> {
    CATALOG.iter().find(|t| t.name == name)
}

/// The synthetic payload of a test fire: the example, tagged `"_synthetic": true`.
pub fn synthetic(event_type: &EventType) -> Value {
    let mut data = (event_type.example)();
    data["_synthetic"] = json!(true);
    data
}
