//! Tenant isolation: a key implies its tenant, the `/t/{slug}` prefix must agree with it, and on
//! PostgreSQL row-level security holds even for a query that forgets its tenant filter.

mod common;

use common::{assert_problem, create_tenant, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_engines!(
    a_key_of_one_tenant_cannot_reach_another_through_any_route,
    the_tenant_prefix_must_name_the_keys_tenant,
);

async fn a_key_of_one_tenant_cannot_reach_another_through_any_route(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--tenancy", "multi"]).await;
    let (b_tenant, b_admin) = create_tenant(&srv, "beta").await;
    let (b_scoped_id, b_scoped) = {
        let (status, key) = srv
            .post(
                "/v1/api-keys",
                &b_admin,
                json!({"name": "b", "scopes": ["events:write"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        (
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        )
    };

    let (_, a_keys) = srv.get("/v1/api-keys", &srv.admin_key).await;
    let a_ids: Vec<_> = a_keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].clone())
        .collect();
    assert_eq!(a_ids.len(), 1, "tenant A sees only its own key: {a_keys}");

    let (_, b_keys) = srv.get("/v1/api-keys", &b_admin).await;
    assert_eq!(b_keys["data"].as_array().unwrap().len(), 2);
    assert!(b_keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| !a_ids.contains(&k["id"])));

    let cross_revoke = srv
        .delete(&format!("/v1/api-keys/{b_scoped_id}"), &srv.admin_key)
        .await;
    assert_problem(&cross_revoke, StatusCode::NOT_FOUND, "not_found");
    let (status, me) = srv.get("/v1/whoami", &b_scoped).await;
    assert_eq!(status, StatusCode::OK, "B's key still works");
    assert_eq!(me["tenant_id"], b_tenant.as_str());

    let through_b = srv.get("/t/beta/v1/api-keys", &srv.admin_key).await;
    assert_problem(&through_b, StatusCode::NOT_FOUND, "tenant_not_found");
    srv.stop().await;
}

async fn the_tenant_prefix_must_name_the_keys_tenant(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, me) = srv.get("/t/default/v1/whoami", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["tenant_slug"], "default");
    let (status, page) = srv
        .get("/t/default/v1/api-keys?limit=1", &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "query strings survive the prefix");
    assert_eq!(page["data"].as_array().unwrap().len(), 1);

    let unknown = srv.get("/t/nobody/v1/whoami", &srv.admin_key).await;
    assert_problem(&unknown, StatusCode::NOT_FOUND, "tenant_not_found");
    let unauthenticated = srv
        .call(reqwest::Method::GET, "/t/default/v1/whoami", None, None)
        .await;
    assert_problem(&unauthenticated, StatusCode::UNAUTHORIZED, "unauthorized");
    srv.stop().await;
}

/// Row-level security is PostgreSQL's; these run on PostgreSQL only, as the restricted role the
/// server itself uses.
mod row_level_security {
    use super::*;
    use sqlx::Connection as _;

    /// A transaction with the RLS tenant set, as `Db::read` and `Db::write` open them.
    async fn scoped_to<'c>(
        conn: &'c mut sqlx::PgConnection,
        tenant: &str,
    ) -> sqlx::Transaction<'c, sqlx::Postgres> {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('switchyard.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }

    async fn as_app_role(srv: &TestServer) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(srv.db.app_url.as_deref().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(switchyard_pg_tests),
        ignore = "row-level security is PostgreSQL's: set SWITCHYARD_TEST_DATABASE_URL"
    )]
    async fn with_no_tenant_set_a_query_sees_no_rows() {
        let srv = TestServer::start(Engine::Postgres).await;
        let mut conn = as_app_role(&srv).await;
        let (visible,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(visible, 0);

        let mut tx = scoped_to(&mut conn, &srv.tenant_id).await;
        let (visible,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(visible, 1, "the tenant's own first admin key");
        tx.rollback().await.unwrap();
        srv.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(switchyard_pg_tests),
        ignore = "row-level security is PostgreSQL's: set SWITCHYARD_TEST_DATABASE_URL"
    )]
    async fn a_cross_tenant_insert_is_rejected() {
        let srv = TestServer::start_with(Engine::Postgres, &["--tenancy", "multi"]).await;
        let (other_tenant, _) = create_tenant(&srv, "other").await;
        let mut conn = as_app_role(&srv).await;
        let mut tx = scoped_to(&mut conn, &srv.tenant_id).await;
        let err = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, kind, scopes, prefix, secret_hash, created_at)
             VALUES ('key_x', $1, 'smuggled', 'admin', '', 'smuggled0000', 'x', 0)",
        )
        .bind(&other_tenant)
        .execute(&mut *tx)
        .await
        .expect_err("RLS refuses a row for another tenant");
        assert!(err.to_string().contains("row-level security"), "{err}");
        srv.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(switchyard_pg_tests),
        ignore = "row-level security is PostgreSQL's: set SWITCHYARD_TEST_DATABASE_URL"
    )]
    async fn a_forgotten_tenant_filter_still_sees_one_tenant() {
        let srv = TestServer::start_with(Engine::Postgres, &["--tenancy", "multi"]).await;
        create_tenant(&srv, "other").await;
        let mut conn = as_app_role(&srv).await;
        let mut tx = scoped_to(&mut conn, &srv.tenant_id).await;
        let tenants: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT tenant_id FROM api_keys")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(tenants, vec![(srv.tenant_id.clone(),)]);
        srv.stop().await;
    }
}
