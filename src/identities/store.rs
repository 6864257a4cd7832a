//! SQL for the `identities`, `customers` and (for tying a customer to a click) `clicks` tables.

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::Tx;

use super::Namespace;

/// Who an identifier belongs to.
#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Subject {
    /// `customer` or `member` (a partner).
    pub subject_type: String,
    pub subject_id: String,
}

/// Makes `pairs` the member's entries in their namespaces: an older value in the same namespace
/// is removed, an identifier another member already holds is left with it.
pub(super) async fn replace_member(
    tx: &mut Tx,
    tenant_id: &str,
    member_id: &str,
    pairs: &[(Namespace, String)],
    now: i64,
) -> sqlx::Result<()> {
    for (namespace, identifier) in pairs {
        sqlx::query(
            "DELETE FROM identities
             WHERE tenant_id = $1 AND subject_type = 'member' AND subject_id = $2
               AND namespace = $3 AND identifier <> $4",
        )
        .bind(tenant_id)
        .bind(member_id)
        .bind(namespace.as_str())
        .bind(identifier)
        .execute(&mut **tx)
        .await?;
        insert(
            tx, tenant_id, *namespace, identifier, "member", member_id, now,
        )
        .await?;
    }
    Ok(())
}

/// Binds an identifier unless it is bound to a subject of this type already. Returns true
/// when this call bound it.
pub(super) async fn insert(
    tx: &mut Tx,
    tenant_id: &str,
    namespace: Namespace,
    identifier: &str,
    subject_type: &str,
    subject_id: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO identities (tenant_id, namespace, identifier, subject_type, subject_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, namespace, identifier, subject_type) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(namespace.as_str())
    .bind(identifier)
    .bind(subject_type)
    .bind(subject_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The subject of an identifier: of `subject_type` when given, else the customer if there is
/// one, else the member.
pub async fn find_subject(
    tx: &mut Tx,
    tenant_id: &str,
    namespace: Namespace,
    identifier: &str,
    subject_type: Option<&str>,
) -> sqlx::Result<Option<Subject>> {
    sqlx::query_as(
        "SELECT subject_type, subject_id FROM identities
         WHERE tenant_id = $1 AND namespace = $2 AND identifier = $3
           AND ($4 = '' OR subject_type = $4)
         ORDER BY subject_type
         LIMIT 1",
    )
    .bind(tenant_id)
    .bind(namespace.as_str())
    .bind(identifier)
    .bind(subject_type.unwrap_or_default())
    .fetch_optional(&mut **tx)
    .await
}

pub(super) async fn customer_exists(tx: &mut Tx, tenant_id: &str, id: &str) -> sqlx::Result<bool> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM customers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

pub(super) async fn insert_customer(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO customers (id, tenant_id, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(tenant_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The customer a click is tied to: `Some(None)` for a click tied to no one yet, `None` when
/// the tenant has no such click.
pub async fn click_customer(
    tx: &mut Tx,
    tenant_id: &str,
    click_id: &str,
) -> sqlx::Result<Option<Option<String>>> {
    let found: Option<(Option<String>,)> =
        sqlx::query_as("SELECT customer_id FROM clicks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(click_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.map(|(customer,)| customer))
}

/// Ties a click to a customer unless it is tied to someone already. Returns true when it is
/// now tied to `customer_id`.
pub(super) async fn tie_click(
    tx: &mut Tx,
    tenant_id: &str,
    click_id: &str,
    customer_id: &str,
) -> sqlx::Result<bool> {
    let tied = sqlx::query(
        "UPDATE clicks SET customer_id = $1
         WHERE tenant_id = $2 AND id = $3 AND (customer_id IS NULL OR customer_id = $1)",
    )
    .bind(customer_id)
    .bind(tenant_id)
    .bind(click_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(tied == 1)
}
