//! SQL for webhook endpoints, messages, deliveries and attempts.

use crate::db::{Db, Dialect, Tx, TENANT_SETTING};
use crate::http::pagination::Page;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredEndpoint {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub description: String,
    pub event_types: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub rate_limit: Option<i64>,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub success_count: i64,
    pub failure_count: i64,
    pub consecutive_failures: i64,
    pub failing_since: Option<i64>,
    pub last_status: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub created_at: i64,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, secret, previous_secret, \
     previous_secret_until, rate_limit, status, disabled_reason, success_count, failure_count, \
     consecutive_failures, failing_since, last_status, last_attempt_at, last_success_at, created_at";

pub async fn insert_endpoint(tx: &mut Tx, e: &StoredEndpoint) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, secret, rate_limit,
             status, success_count, failure_count, consecutive_failures, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'enabled', 0, 0, 0, $8, $8)",
    )
    .bind(&e.id)
    .bind(&e.tenant_id)
    .bind(&e.url)
    .bind(&e.description)
    .bind(&e.event_types)
    .bind(&e.secret)
    .bind(e.rate_limit)
    .bind(e.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find_endpoint(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

/// The live endpoint with exactly this URL and event-type filter, if any (re-subscriptions).
pub async fn find_subscription(
    tx: &mut Tx,
    tenant_id: &str,
    url: &str,
    event_types: &str,
) -> sqlx::Result<Option<StoredEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE tenant_id = $1 AND url = $2 AND event_types = $3 AND deleted_at IS NULL
         ORDER BY created_at DESC, id DESC LIMIT 1"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(url)
        .bind(event_types)
        .fetch_optional(&mut **tx)
        .await
}

/// A page of live endpoints, newest first; with `url`, only endpoints with that URL.
pub async fn list_endpoints(
    tx: &mut Tx,
    tenant_id: &str,
    url: Option<&str>,
    page: &Page,
) -> sqlx::Result<Vec<StoredEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2 = '' OR url = $2)
           AND (created_at < $3 OR (created_at = $3 AND id < $4))
         ORDER BY created_at DESC, id DESC LIMIT $5"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(url.unwrap_or_default())
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

pub async fn update_endpoint(tx: &mut Tx, e: &StoredEndpoint, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_endpoints SET url = $1, description = $2, event_types = $3,
             status = $4, disabled_reason = $5, consecutive_failures = $6, failing_since = $7,
             secret = $8, previous_secret = $9, previous_secret_until = $10, rate_limit = $11,
             updated_at = $12
         WHERE tenant_id = $13 AND id = $14",
    )
    .bind(&e.url)
    .bind(&e.description)
    .bind(&e.event_types)
    .bind(&e.status)
    .bind(&e.disabled_reason)
    .bind(e.consecutive_failures)
    .bind(e.failing_since)
    .bind(&e.secret)
    .bind(&e.previous_secret)
    .bind(e.previous_secret_until)
    .bind(e.rate_limit)
    .bind(now)
    .bind(&e.tenant_id)
    .bind(&e.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn delete_endpoint(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = $1, updated_at = $1
         WHERE tenant_id = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

#[derive(Debug, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
}

/// The messages among `ids` (at most a few hundred), in no particular order.
pub async fn find_messages(
    tx: &mut Tx,
    tenant_id: &str,
    ids: &[&str],
) -> sqlx::Result<Vec<StoredMessage>> {
    let sql = format!(
        "SELECT id, event_type, payload, created_at FROM messages
         WHERE tenant_id = $1 AND id IN ({})",
        key_list(ids.len(), 2)
    );
    let mut query = sqlx::query_as(&sql).bind(tenant_id);
    for id in padded(ids) {
        query = query.bind(id);
    }
    query.fetch_all(&mut **tx).await
}

/// Enabled endpoints whose filter takes `event_type` (an empty filter takes every type).
pub async fn subscribed_endpoints(
    tx: &mut Tx,
    tenant_id: &str,
    event_type: &str,
) -> sqlx::Result<Vec<StoredEndpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE tenant_id = $1 AND status = 'enabled' AND deleted_at IS NULL
           AND (event_types = '' OR (' ' || event_types || ' ') LIKE ('% ' || $2 || ' %'))
         ORDER BY id"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(event_type)
        .fetch_all(&mut **tx)
        .await
}

/// A delivery to create: a message to an endpoint.
#[derive(serde::Serialize)]
pub struct NewDelivery<'a> {
    pub id: String,
    pub message_id: &'a str,
    pub endpoint_id: &'a str,
}

/// Creates `deliveries` of `tenant_id`'s messages in one statement, skipping those that exist
/// (one per message and endpoint); returns the ids of the new ones.
pub async fn insert_deliveries(
    tx: &mut Tx,
    dialect: Dialect,
    tenant_id: &str,
    deliveries: &[NewDelivery<'_>],
    now: i64,
) -> sqlx::Result<Vec<String>> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "INSERT INTO deliveries (id, tenant_id, message_id, endpoint_id, status, attempts, created_at, updated_at)
         SELECT v.id, $2, v.message_id, v.endpoint_id, 'pending', 0, $3, $3 FROM {}
         WHERE true -- SQLite would read the ON of the upsert as a join's
         ON CONFLICT (message_id, endpoint_id) DO NOTHING
         RETURNING id",
        dialect.json_rows(
            "v",
            &[("id", "text"), ("message_id", "text"), ("endpoint_id", "text")]
        )
    );
    let rows = Dialect::json_param(deliveries)?;
    let created: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(rows)
        .bind(tenant_id)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    Ok(created.into_iter().map(|(id,)| id).collect())
}

#[derive(Debug, sqlx::FromRow)]
pub struct StoredDelivery {
    pub id: String,
    pub status: String,
}

pub async fn find_delivery(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<StoredDelivery>> {
    sqlx::query_as("SELECT id, status FROM deliveries WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

/// A delivery about to be attempted, read in one query with its message and endpoint (or, for
/// its first attempt, carried from its fan-out).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryToAttempt {
    pub delivery_status: String,
    pub message_id: String,
    pub event_type: String,
    pub payload: String,
    pub message_created_at: i64,
    #[sqlx(flatten)]
    pub endpoint: StoredEndpoint,
}

/// A pending or finished delivery, found with its message and live endpoint.
#[derive(Debug, sqlx::FromRow)]
pub struct FoundDelivery {
    pub delivery_id: String,
    #[sqlx(flatten)]
    pub target: DeliveryToAttempt,
}

/// The deliveries among `ids` with their messages and live endpoints, in one query; a delivery
/// that is missing, or whose endpoint was deleted, is left out ([`find_delivery`] tells which).
pub async fn deliveries_to_attempt(
    tx: &mut Tx,
    tenant_id: &str,
    ids: &[&str],
) -> sqlx::Result<Vec<FoundDelivery>> {
    let endpoint_columns: Vec<String> = ENDPOINT_COLUMNS
        .split(", ")
        .map(|column| format!("e.{column}"))
        .collect();
    // The deliveries are looked up first, by their keys alone, and the others by theirs (a
    // delivery's message and endpoint are its tenant's); the tenant is checked after. With stale
    // statistics PostgreSQL otherwise reads the tenant's deliveries through its endpoint index
    // (a tenant filter in the lookup: measured, 2-40 ms a batch once a few thousand exist) or
    // starts from the tenant's endpoints (a tenant filter in the joins).
    let sql = format!(
        "WITH d AS MATERIALIZED (
             SELECT id, tenant_id, status, message_id, endpoint_id FROM deliveries
             WHERE id IN ({}))
         SELECT d.id AS delivery_id, d.status AS delivery_status, m.id AS message_id,
                m.event_type, m.payload, m.created_at AS message_created_at, {}
         FROM d
         JOIN messages m ON m.id = d.message_id
         JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.deleted_at IS NULL
         WHERE d.tenant_id = $1",
        key_list(ids.len(), 2),
        endpoint_columns.join(", ")
    );
    let mut query = sqlx::query_as(&sql).bind(tenant_id);
    for id in padded(ids) {
        query = query.bind(id);
    }
    query.fetch_all(&mut **tx).await
}

/// Placeholders `$first, ...` for a list of `len` keys, padded to the next power of two so a
/// batch's statement is one of a few whatever its size: each is parsed once per connection.
fn key_list(len: usize, first: usize) -> String {
    (0..len.next_power_of_two())
        .map(|n| format!("${}", first + n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `keys` padded to the length of [`key_list`] by repeating the last (a no-op in an `IN` list).
fn padded<'a>(keys: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
    let last = keys.last().copied().unwrap_or_default();
    let len = keys.len().next_power_of_two();
    keys.iter()
        .copied()
        .chain(std::iter::repeat(last))
        .take(len)
}

/// One attempt's result, as recorded.
pub struct AttemptRecord<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub delivery_id: &'a str,
    pub endpoint_id: &'a str,
    pub status_code: Option<i64>,
    pub error_class: Option<&'a str>,
    pub latency_ms: i64,
    pub response_body: &'a str,
    pub at: i64,
}

pub async fn insert_attempt(tx: &mut Tx, a: &AttemptRecord<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO delivery_attempts (id, tenant_id, delivery_id, endpoint_id, status_code, error_class,
             latency_ms, response_body, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.id)
    .bind(a.tenant_id)
    .bind(a.delivery_id)
    .bind(a.endpoint_id)
    .bind(a.status_code)
    .bind(a.error_class)
    .bind(a.latency_ms)
    .bind(a.response_body)
    .bind(a.at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn finish_attempt(
    tx: &mut Tx,
    tenant_id: &str,
    delivery_id: &str,
    status: &str,
    last_status: Option<i64>,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET status = $1, attempts = attempts + 1, last_status = $2, updated_at = $3
         WHERE tenant_id = $4 AND id = $5",
    )
    .bind(status)
    .bind(last_status)
    .bind(now)
    .bind(tenant_id)
    .bind(delivery_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A successful attempt, waiting to be group-committed.
#[derive(Debug)]
pub struct Success {
    pub attempt_id: String,
    pub tenant_id: String,
    pub delivery_id: String,
    pub endpoint_id: String,
    pub status_code: i64,
    pub latency_ms: i64,
    pub response_body: String,
    pub at: i64,
}

/// A successful attempt as the batch insert reads it (see [`Dialect::json_rows`]).
#[derive(serde::Serialize)]
struct NewAttemptRow<'a> {
    id: &'a str,
    tenant_id: &'a str,
    delivery_id: &'a str,
    endpoint_id: &'a str,
    status_code: i64,
    latency_ms: i64,
    response_body: &'a str,
    created_at: i64,
}

const ATTEMPT_COLUMNS: [(&str, &str); 8] = [
    ("id", "text"),
    ("tenant_id", "text"),
    ("delivery_id", "text"),
    ("endpoint_id", "text"),
    ("status_code", "bigint"),
    ("latency_ms", "bigint"),
    ("response_body", "text"),
    ("created_at", "bigint"),
];

/// Records successful attempts of any tenants in one transaction: their attempts, their
/// deliveries `succeeded`, and one counters update per endpoint (so deliveries to one endpoint
/// share its row lock once per batch, not once each).
pub async fn record_successes(db: &Db, successes: &[Success]) -> sqlx::Result<()> {
    let groups = crate::db::by_tenant(successes, |s| &s.tenant_id);
    let Some((first, _)) = groups.first() else {
        return Ok(());
    };
    let insert_attempts = format!(
        "INSERT INTO delivery_attempts (id, tenant_id, delivery_id, endpoint_id, status_code,
             latency_ms, response_body, created_at)
         SELECT * FROM {}",
        db.dialect().json_rows("v", &ATTEMPT_COLUMNS)
    );
    // Replayable: every delivery here waits for this commit before its job is marked done.
    let mut tx = db.write_unflushed(first).await?;
    for (n, (tenant, batch)) in groups.iter().enumerate() {
        if n > 0 {
            db.set_local(&mut tx, TENANT_SETTING, tenant).await?;
        }
        let rows: Vec<NewAttemptRow> = batch
            .iter()
            .map(|s| NewAttemptRow {
                id: &s.attempt_id,
                tenant_id: &s.tenant_id,
                delivery_id: &s.delivery_id,
                endpoint_id: &s.endpoint_id,
                status_code: s.status_code,
                latency_ms: s.latency_ms,
                response_body: &s.response_body,
                created_at: s.at,
            })
            .collect();
        let rows = Dialect::json_param(&rows)?;
        sqlx::query(&insert_attempts)
            .bind(rows)
            .execute(&mut *tx)
            .await?;

        // By key alone: these deliveries were read under this tenant's scope (and RLS holds on
        // PostgreSQL); naming the tenant let PostgreSQL, before it had statistics, scan the
        // tenant's deliveries through its endpoint index instead. The list is padded to a power
        // of two (see `key_list`).
        let size = batch.len().next_power_of_two();
        let cases: String = (0..size)
            .map(|n| format!(" WHEN ${} THEN ${}", 2 + 2 * n, 3 + 2 * n))
            .collect();
        let ids: Vec<String> = (0..size).map(|n| format!("${}", 2 + 2 * n)).collect();
        let sql = format!(
            "UPDATE deliveries SET status = 'succeeded', attempts = attempts + 1,
                 last_status = CASE id{cases} END, updated_at = $1
             WHERE id IN ({})",
            ids.join(", ")
        );
        let latest = batch.iter().map(|s| s.at).max().unwrap_or_default();
        let mut update = sqlx::query(&sql).bind(latest);
        let last = batch[batch.len() - 1];
        for s in batch.iter().chain(std::iter::repeat(&last)).take(size) {
            update = update.bind(&s.delivery_id).bind(s.status_code);
        }
        update.execute(&mut *tx).await?;

        let mut endpoints: Vec<&str> = batch.iter().map(|s| s.endpoint_id.as_str()).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        for endpoint in endpoints {
            let mine: Vec<&&Success> = batch.iter().filter(|s| s.endpoint_id == endpoint).collect();
            let last = mine
                .iter()
                .max_by_key(|s| s.at)
                .expect("one success at least");
            count_success(
                &mut tx,
                tenant,
                endpoint,
                mine.len() as i64,
                Some(last.status_code),
                last.at,
            )
            .await?;
        }
    }
    tx.commit().await
}

/// Counts `successes` on the endpoint and clears its failure streak.
pub async fn count_success(
    tx: &mut Tx,
    tenant_id: &str,
    endpoint_id: &str,
    successes: i64,
    status: Option<i64>,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_endpoints SET success_count = success_count + $5, consecutive_failures = 0,
             failing_since = NULL, last_status = $1, last_attempt_at = $2, last_success_at = $2, updated_at = $2
         WHERE tenant_id = $3 AND id = $4",
    )
    .bind(status)
    .bind(now)
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(successes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts a failure; disables the endpoint with `disable_reason` when given, or when it has been
/// failing without a success since before `failing_cutoff`. Returns whether it is now disabled.
pub async fn count_failure(
    tx: &mut Tx,
    tenant_id: &str,
    endpoint_id: &str,
    status: Option<i64>,
    now: i64,
    failing_cutoff: i64,
    disable_reason: Option<&str>,
) -> sqlx::Result<bool> {
    let (state,): (String,) = sqlx::query_as(
        "UPDATE webhook_endpoints SET failure_count = failure_count + 1,
             consecutive_failures = consecutive_failures + 1,
             failing_since = COALESCE(failing_since, $1), last_status = $2, last_attempt_at = $1, updated_at = $1,
             status = CASE WHEN $3 <> '' OR COALESCE(failing_since, $1) < $4 THEN 'disabled' ELSE status END,
             disabled_reason = CASE
                 WHEN $3 <> '' THEN $3
                 WHEN COALESCE(failing_since, $1) < $4 THEN 'failing continuously since an attempt older than the disable window'
                 ELSE disabled_reason END
         WHERE tenant_id = $5 AND id = $6
         RETURNING status",
    )
    .bind(now)
    .bind(status)
    .bind(disable_reason.unwrap_or_default())
    .bind(failing_cutoff)
    .bind(tenant_id)
    .bind(endpoint_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(state == "disabled")
}

/// A delivery as the API shows it, with its message's event type.
#[derive(Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub message_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.message_id, d.endpoint_id, m.event_type, d.status, d.attempts, \
     d.last_status, d.created_at, d.updated_at";

/// A page of an endpoint's deliveries, newest first.
pub async fn list_deliveries(
    tx: &mut Tx,
    tenant_id: &str,
    endpoint_id: &str,
    page: &Page,
) -> sqlx::Result<Vec<DeliveryRow>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id
         WHERE d.tenant_id = $1 AND d.endpoint_id = $2
           AND (d.created_at < $3 OR (d.created_at = $3 AND d.id < $4))
         ORDER BY d.created_at DESC, d.id DESC LIMIT $5"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(endpoint_id)
        .bind(page.after.0)
        .bind(&page.after.1)
        .bind(page.fetch())
        .fetch_all(&mut **tx)
        .await
}

pub async fn delivery_row(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<Option<DeliveryRow>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id
         WHERE d.tenant_id = $1 AND d.id = $2"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

#[derive(Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub status_code: Option<i64>,
    pub error_class: Option<String>,
    pub latency_ms: i64,
    pub response_body: String,
    pub created_at: i64,
}

/// A delivery's attempts, oldest first.
pub async fn attempts(
    tx: &mut Tx,
    tenant_id: &str,
    delivery_id: &str,
) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "SELECT id, status_code, error_class, latency_ms, response_body, created_at FROM delivery_attempts
         WHERE tenant_id = $1 AND delivery_id = $2 ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .bind(delivery_id)
    .fetch_all(&mut **tx)
    .await
}

/// Makes a finished delivery pending again. Returns false when it is pending already.
pub async fn reopen_delivery(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let reopened = sqlx::query(
        "UPDATE deliveries SET status = 'pending', updated_at = $1
         WHERE tenant_id = $2 AND id = $3 AND status <> 'pending'",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(reopened.rows_affected() == 1)
}

/// Ids of an endpoint's failed deliveries created at or after `since`.
pub async fn failed_since(
    tx: &mut Tx,
    tenant_id: &str,
    endpoint_id: &str,
    since: i64,
) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM deliveries
         WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'failed' AND created_at >= $3
         ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(since)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn insert_message(
    tx: &mut Tx,
    id: &str,
    tenant_id: &str,
    event_type: &str,
    payload: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, event_type, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(event_type)
    .bind(payload)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Latencies (ms) of the most recent `per_endpoint` attempts of each of `endpoints`.
pub async fn recent_latencies(
    tx: &mut Tx,
    tenant_id: &str,
    endpoints: &[&str],
    per_endpoint: i64,
) -> sqlx::Result<std::collections::HashMap<String, Vec<i64>>> {
    if endpoints.is_empty() {
        return Ok(Default::default());
    }
    let placeholders: Vec<String> = (0..endpoints.len())
        .map(|i| format!("${}", i + 3))
        .collect();
    let sql = format!(
        "SELECT endpoint_id, latency_ms FROM (
             SELECT endpoint_id, latency_ms,
                    ROW_NUMBER() OVER (PARTITION BY endpoint_id ORDER BY created_at DESC) AS recency
             FROM delivery_attempts
             WHERE tenant_id = $1 AND endpoint_id IN ({})
         ) recent
         WHERE recency <= $2",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(&sql)
        .bind(tenant_id)
        .bind(per_endpoint);
    for endpoint in endpoints {
        query = query.bind(*endpoint);
    }
    let mut latencies: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for (endpoint, latency) in query.fetch_all(&mut **tx).await? {
        latencies.entry(endpoint).or_default().push(latency);
    }
    Ok(latencies)
}

/// An endpoint's counters, as `/metrics` shows them.
#[derive(Debug, sqlx::FromRow)]
pub struct EndpointCounters {
    pub tenant_id: String,
    pub id: String,
    pub status: String,
    pub success_count: i64,
    pub failure_count: i64,
    pub consecutive_failures: i64,
}

/// The counters of a tenant's live endpoints.
pub async fn counters(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Vec<EndpointCounters>> {
    sqlx::query_as(
        "SELECT tenant_id, id, status, success_count, failure_count, consecutive_failures
         FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await
}

/// The endpoint's rate limit as GCRA on its row, so every node shares it: a delivery may go
/// when the theoretical arrival time `rate_next_at` is at most a burst ahead of now, and then
/// pushes it one interval further. Returns `None` when this delivery may go now, else how long
/// to wait before asking again.
pub async fn take_rate_slot(
    tx: &mut Tx,
    tenant_id: &str,
    endpoint_id: &str,
    per_second: i64,
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let interval = (1000 / per_second.max(1)).max(1);
    let tolerance = 1000 - interval;
    let taken = sqlx::query(
        "UPDATE webhook_endpoints
         SET rate_next_at = (CASE WHEN rate_next_at IS NULL OR rate_next_at < $1 THEN $1 ELSE rate_next_at END) + $2
         WHERE tenant_id = $3 AND id = $4 AND (rate_next_at IS NULL OR rate_next_at <= $1 + $5)",
    )
    .bind(now)
    .bind(interval)
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(tolerance)
    .execute(&mut **tx)
    .await?;
    if taken.rows_affected() == 1 {
        return Ok(None);
    }
    let (next,): (Option<i64>,) = sqlx::query_as(
        "SELECT rate_next_at FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(endpoint_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some((next.unwrap_or(now) - tolerance - now).max(10)))
}
