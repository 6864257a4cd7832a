//! Tenant webhooks: endpoints that subscribe to event types, and the signed delivery of every
//! message emitted through the outbox to every enabled endpoint subscribed to its type.
//!
//! `routes` is the REST-hooks API automation platforms use; `deliveries` lets admins watch and
//! replay; `delivery` holds the whole delivery
//! path (fan-out, signing, sending, recording attempts and counters, the retry schedule and the
//! disable rules) so it can be read in one sitting; `signing` is Standard Webhooks.

pub mod deliveries;
pub mod delivery;
pub mod routes;
pub mod signing;
mod store;

/// Every event type an endpoint can subscribe to, with what it announces.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("partner.created", "A partner was created"),
    ("partner.activated", "A partner became active"),
    ("partner.revoked", "A partner was revoked"),
    (
        "partnership.approved",
        "A partner from the Network was approved",
    ),
    (
        "attribution.created",
        "A conversion was attributed to a partner",
    ),
    ("commission.accrued", "A commission was accrued"),
    (
        "commission.approved",
        "A commission passed its holdback and was approved",
    ),
    (
        "commission.reversed",
        "A commission was reversed by a refund",
    ),
    ("payout.paid", "A payout was paid"),
    ("webhook.test", "A test ping"),
];

pub fn is_event_type(name: &str) -> bool {
    EVENT_TYPES.iter().any(|(known, _)| *known == name)
}

fn event_type_names() -> String {
    EVENT_TYPES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Event types are stored sorted and space-separated; empty means every type.
fn join_types(types: &[String]) -> String {
    let mut types: Vec<&str> = types.iter().map(String::as_str).collect();
    types.sort_unstable();
    types.dedup();
    types.join(" ")
}

fn split_types(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}
