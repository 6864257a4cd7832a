//! SQL for `stripe_settings` and `stripe_events`.

use crate::db::Tx;
use crate::http::pagination::Page;

/// A tenant's Stripe settings as stored: secrets sealed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredSettings {
    pub secret_key_sealed: Option<String>,
    pub key_mode: Option<String>,
    pub key_last4: Option<String>,
    pub webhook_secrets_sealed: String,
    pub connect_secrets_sealed: String,
    pub updated_at: i64,
}

pub async fn settings(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Option<StoredSettings>> {
    sqlx::query_as(
        "SELECT secret_key_sealed, key_mode, key_last4, webhook_secrets_sealed,
                connect_secrets_sealed, updated_at
         FROM stripe_settings WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn save_settings(tx: &mut Tx, tenant_id: &str, s: &StoredSettings) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO stripe_settings (tenant_id, secret_key_sealed, key_mode, key_last4,
             webhook_secrets_sealed, connect_secrets_sealed, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id) DO UPDATE SET secret_key_sealed = excluded.secret_key_sealed,
             key_mode = excluded.key_mode, key_last4 = excluded.key_last4,
             webhook_secrets_sealed = excluded.webhook_secrets_sealed,
             connect_secrets_sealed = excluded.connect_secrets_sealed,
             updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(&s.secret_key_sealed)
    .bind(&s.key_mode)
    .bind(&s.key_last4)
    .bind(&s.webhook_secrets_sealed)
    .bind(&s.connect_secrets_sealed)
    .bind(s.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored Stripe event.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub livemode: i64,
    pub account: Option<String>,
    pub object_id: Option<String>,
    pub payload: String,
    pub received_at: i64,
    pub state: String,
    pub outcome: Option<String>,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, type, livemode, account, object_id, payload, received_at, state, outcome, updated_at";

/// Stores a verified event unless its id is known; true when this call stored it.
pub async fn insert_event(tx: &mut Tx, tenant_id: &str, e: &StoredEvent) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (tenant_id, id, type, livemode, account, object_id, payload,
             received_at, state, outcome, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (tenant_id, id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(e.livemode)
    .bind(&e.account)
    .bind(&e.object_id)
    .bind(&e.payload)
    .bind(e.received_at)
    .bind(&e.state)
    .bind(&e.outcome)
    .bind(e.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn find_event(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM stripe_events WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn set_outcome(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    state: &str,
    outcome: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE stripe_events SET state = $1, outcome = $2, updated_at = $3
         WHERE tenant_id = $4 AND id = $5",
    )
    .bind(state)
    .bind(outcome)
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Events newest first, optionally of one type and in one state.
pub async fn list_events(
    tx: &mut Tx,
    tenant_id: &str,
    event_type: Option<&str>,
    state: Option<&str>,
    page: &Page,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM stripe_events
         WHERE tenant_id = $1 AND ($2 = '' OR type = $2) AND ($3 = '' OR state = $3)
           AND (received_at < $4 OR (received_at = $4 AND id < $5))
         ORDER BY received_at DESC, id DESC
         LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(event_type.unwrap_or_default())
    .bind(state.unwrap_or_default())
    .bind(page.after.0)
    .bind(&page.after.1)
    .bind(page.fetch())
    .fetch_all(&mut **tx)
    .await
}

/// The invoice that `payment_intent` paid, from a stored `invoice_payment.paid`.
pub async fn invoice_paid_by(
    tx: &mut Tx,
    tenant_id: &str,
    payment_intent: &str,
) -> sqlx::Result<Option<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT payload FROM stripe_events
         WHERE tenant_id = $1 AND object_id = $2 AND type = 'invoice_payment.paid'",
    )
    .bind(tenant_id)
    .bind(payment_intent)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().find_map(|(payload,)| {
        let payload: serde_json::Value = serde_json::from_str(&payload).ok()?;
        payload["data"]["object"]["invoice"]
            .as_str()
            .map(str::to_owned)
    }))
}
