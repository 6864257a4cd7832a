//! Both engines' migrations produce the same tables, columns, keys and indexes.

mod common;

use std::collections::BTreeMap;

use common::{Engine, TestDb};
use switchyard::db::Db;

/// table -> [(column, portable type, not null, primary key)], plus the explicit index names.
type Schema = (
    BTreeMap<String, Vec<(String, String, bool, bool)>>,
    Vec<String>,
);

fn portable(declared: &str) -> String {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer",
        "text" => "text",
        "real" | "double precision" => "real",
        "blob" | "bytea" => "blob",
        other => other,
    }
    .to_owned()
}

async fn sqlite_schema(db: &Db) -> Schema {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table'
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut schema = BTreeMap::new();
    for (table,) in tables {
        let columns: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid",
        )
        .bind(&table)
        .fetch_all(db.pool())
        .await
        .unwrap();
        let columns = columns
            .into_iter()
            .map(|(name, ty, not_null, pk)| (name, portable(&ty), not_null == 1 || pk > 0, pk > 0))
            .collect();
        schema.insert(table, columns);
    }
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    (schema, indexes.into_iter().map(|(n,)| n).collect())
}

async fn postgres_schema(db: &Db) -> Schema {
    let columns: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text,
                (SELECT count(*) FROM information_schema.table_constraints tc
                   JOIN information_schema.key_column_usage k
                     ON k.constraint_name = tc.constraint_name AND k.table_name = tc.table_name
                  WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = c.table_name
                    AND k.column_name = c.column_name)::bigint
           FROM information_schema.columns c
          WHERE c.table_schema = 'public' AND c.table_name <> '_sqlx_migrations'
          ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut schema: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (table, column, ty, nullable, pk) in columns {
        schema
            .entry(table)
            .or_default()
            .push((column, portable(&ty), nullable == "NO", pk > 0));
    }
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'
           AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY indexname",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    (schema, indexes.into_iter().map(|(n,)| n).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(switchyard_pg_tests),
    ignore = "compares with PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL"
)]
async fn both_engines_migrate_to_the_same_schema() {
    let sqlite = TestDb::create(Engine::Sqlite).await;
    let postgres = TestDb::create(Engine::Postgres).await;
    let sqlite_db = Db::connect(&sqlite.url, 1).await.unwrap();
    let postgres_db = Db::connect(&postgres.url, 1).await.unwrap();
    sqlite_db.migrate().await.unwrap();
    postgres_db.migrate().await.unwrap();

    let (sqlite_tables, sqlite_indexes) = sqlite_schema(&sqlite_db).await;
    let (postgres_tables, postgres_indexes) = postgres_schema(&postgres_db).await;
    assert!(sqlite_tables.contains_key("api_keys") && sqlite_tables.contains_key("tenants"));
    assert_eq!(sqlite_tables, postgres_tables);
    assert_eq!(sqlite_indexes, postgres_indexes);
    sqlite_db.close().await;
    postgres_db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(switchyard_pg_tests),
    ignore = "row-level security is PostgreSQL's: set SWITCHYARD_TEST_DATABASE_URL"
)]
async fn every_tenant_table_forces_row_level_security() {
    let postgres = TestDb::create(Engine::Postgres).await;
    let db = Db::connect(&postgres.url, 1).await.unwrap();
    db.migrate().await.unwrap();
    let unprotected: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c
           JOIN information_schema.columns col
             ON col.table_name = c.relname AND col.column_name = 'tenant_id'
          WHERE c.relkind = 'r' AND col.table_schema = 'public'
            AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(
        unprotected.is_empty(),
        "tables with tenant_id but no FORCE RLS: {unprotected:?}"
    );
    db.close().await;
}
