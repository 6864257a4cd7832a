//! Tenant webhooks: endpoints that subscribe to event types, and the signed delivery of every
//! message emitted through the outbox to every enabled endpoint subscribed to its type.
//!
//! `routes` is the REST-hooks API automation platforms use; `deliveries` lets admins watch and
//! replay; `delivery` holds the whole delivery
//! path (fan-out, signing, sending, recording attempts and counters, the retry schedule and the
//! disable rules) so it can be read in one sitting; `signing` is Standard Webhooks.

pub mod catalog;
pub mod deliveries;
pub mod delivery;
pub mod routes;
pub mod signing;
pub(crate) mod store;

pub fn is_event_type(name: &str) -> bool {
    catalog::find(name).is_some()
}

fn event_type_names() -> String {
    catalog::CATALOG
        .iter()
        .map(|t| t.name)
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
