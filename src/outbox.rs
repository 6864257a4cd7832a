//! `emit`: the one way a slice announces that something happened.
//!
//! It writes the message and enqueues its dispatch job in the caller's transaction, so the
//! announcement exists if and only if the change it announces commits. Dispatch then fans the
//! message out to the tenant's webhook endpoints (see `webhooks::delivery`). The dispatch job
//! goes through the caller's [`Handoff`]: started after the commit, it runs on this node at
//! once when the node's worker has a free slot.

use job_queue::{Handoff, NewJob};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::db::Tx;
use crate::ids;

/// Records `event_type` with `data` for `tenant_id` and schedules its fan-out through
/// `handoff` (start it after committing `tx`). Returns the message id (`msg_...`), which
/// receivers see as `webhook-id` and deduplicate on.
pub async fn emit(
    tx: &mut Tx,
    handoff: &mut Handoff,
    clock: &Clock,
    tenant_id: &str,
    event_type: &str,
    data: Value,
) -> anyhow::Result<String> {
    let id = ids::new("msg");
    crate::webhooks::store::insert_message(
        tx,
        &id,
        tenant_id,
        event_type,
        &data.to_string(),
        clock.now_ms(),
    )
    .await?;
    let dispatch = NewJob::new(
        crate::webhooks::delivery::DISPATCH,
        json!({ "tenant_id": tenant_id, "message_id": id }),
    )
    .dedupe_key(format!("dispatch:{id}"));
    handoff.enqueue_in(tx, dispatch).await?;
    Ok(id)
}
