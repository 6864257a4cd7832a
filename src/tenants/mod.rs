//! Tenants: the companies whose partner programs one Switchyard runs.
//!
//! In `single` mode there is one tenant, `default`, created on first start. In `multi` mode more
//! are created with `switchyard tenants create`. An API key belongs to one tenant and implies it;
//! the optional `/t/{slug}` URL prefix only has to agree with it.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::db::{is_unique_violation, Tx};
use crate::ids;

/// The slug of the tenant created on first start.
pub const DEFAULT_SLUG: &str = "default";

/// Slugs a tenant cannot take: they name parts of the product or would confuse people.
const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "dashboard",
    "default",
    "docs",
    "healthz",
    "help",
    "login",
    "metrics",
    "openapi",
    "readyz",
    "root",
    "static",
    "status",
    "support",
    "switchyard",
    "system",
    "www",
];

#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("slug must be 3 to 30 characters of a-z, 0-9 and '-'")]
    InvalidSlug,
    #[error("slug {0:?} is reserved")]
    ReservedSlug(String),
    #[error("a tenant with slug {0:?} already exists")]
    SlugTaken(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub fn validate_slug(slug: &str) -> Result<(), TenantError> {
    let well_formed = (3..=30).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return Err(TenantError::InvalidSlug);
    }
    if RESERVED_SLUGS.contains(&slug) {
        return Err(TenantError::ReservedSlug(slug.to_owned()));
    }
    Ok(())
}

/// Creates a tenant with a validated slug.
pub async fn create(
    tx: &mut Tx,
    clock: &Clock,
    slug: &str,
    name: &str,
) -> Result<Tenant, TenantError> {
    validate_slug(slug)?;
    let tenant = Tenant {
        id: ids::new("ten"),
        slug: slug.to_owned(),
        name: name.to_owned(),
    };
    sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&tenant.id)
        .bind(&tenant.slug)
        .bind(&tenant.name)
        .bind(clock.now_ms())
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "tenants_slug_key", "tenants.slug") {
                TenantError::SlugTaken(slug.to_owned())
            } else {
                e.into()
            }
        })?;
    Ok(tenant)
}

/// Creates the default tenant unless it exists. Returns it only when this call created it, so
/// that of several nodes starting at once exactly one announces it.
pub async fn create_default(tx: &mut Tx, clock: &Clock) -> sqlx::Result<Option<Tenant>> {
    let tenant = Tenant {
        id: ids::new("ten"),
        slug: DEFAULT_SLUG.to_owned(),
        name: "Default".to_owned(),
    };
    let inserted = sqlx::query(
        "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (slug) DO NOTHING",
    )
    .bind(&tenant.id)
    .bind(&tenant.slug)
    .bind(&tenant.name)
    .bind(clock.now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok((inserted == 1).then_some(tenant))
}

pub async fn find_by_slug(tx: &mut Tx, slug: &str) -> sqlx::Result<Option<Tenant>> {
    sqlx::query_as("SELECT id, slug, name FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&mut **tx)
        .await
}

/// The slug of tenant `id`.
pub async fn slug_of(tx: &mut Tx, id: &str) -> sqlx::Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT slug FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|(slug,)| slug))
}

/// A tenant the operator bills by usage.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Billed {
    pub id: String,
    pub slug: String,
    pub billing_customer: String,
}

/// The tenants with a billing customer.
pub async fn billed(pool: &sqlx::AnyPool) -> sqlx::Result<Vec<Billed>> {
    sqlx::query_as(
        "SELECT id, slug, billing_customer FROM tenants
         WHERE billing_customer IS NOT NULL ORDER BY slug",
    )
    .fetch_all(pool)
    .await
}

/// Sets (or, with `None`, clears) the tenant's customer in the operator's Stripe account.
pub async fn set_billing_customer(
    tx: &mut Tx,
    tenant_id: &str,
    customer: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE tenants SET billing_customer = $1 WHERE id = $2")
        .bind(customer)
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The tenant's own phone region (ISO 3166 code), if it set one.
pub async fn phone_region(tx: &mut Tx, tenant_id: &str) -> sqlx::Result<Option<String>> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT phone_region FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.and_then(|(region,)| region))
}

/// Sets the tenant's phone region (`None`: use the server's).
pub async fn set_phone_region(
    tx: &mut Tx,
    tenant_id: &str,
    region: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE tenants SET phone_region = $1 WHERE id = $2")
        .bind(region)
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Every tenant's id (for work that visits each tenant, such as `/metrics`).
pub async fn all_ids(pool: &sqlx::AnyPool) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM tenants ORDER BY id")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_documented_pattern() {
        for ok in ["acme", "a-1", "abc", "x23456789012345678901234567890"] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Acme",
            "acme_co",
            "acme.co",
            "",
            "x234567890123456789012345678901",
        ] {
            assert!(
                matches!(validate_slug(bad), Err(TenantError::InvalidSlug)),
                "{bad}"
            );
        }
        assert!(matches!(
            validate_slug("admin"),
            Err(TenantError::ReservedSlug(_))
        ));
        assert!(matches!(
            validate_slug("default"),
            Err(TenantError::ReservedSlug(_))
        ));
    }
}
