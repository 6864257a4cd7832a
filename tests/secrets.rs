//! Rotating the secrets key: with the new key as SWITCHYARD_SECRETS_KEY and the old one in
//! SWITCHYARD_SECRETS_KEY_PREVIOUS the server opens both, `switchyard secrets rotate` re-seals
//! every stored secret under the new one, and then the old key can go.

mod common;

use common::process::{run, stdout, switchyard};
use common::{Engine, TestDb, TestServer, SECRETS_KEY};
use reqwest::StatusCode;
use serde_json::json;
use switchyard::db::Db;
use switchyard::secrets::{SecretBox, SEALED};

on_both_engines!(a_rotation_reseals_every_secret_under_the_new_key);

const NEW_KEY: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

/// Every sealed value of the database, opened with `secrets`: (table.column, plaintext).
async fn opened(db: &TestDb, tenant: &str, secrets: &SecretBox) -> Vec<(String, String)> {
    let store = Db::connect(&db.url, 1).await.unwrap();
    let mut tx = store.write(tenant).await.unwrap();
    let mut all = Vec::new();
    for (table, _, column) in SEALED {
        let rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {column}"
        ))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        for (sealed,) in rows {
            let plaintext = secrets
                .open(&sealed)
                .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
            all.push((format!("{table}.{column}"), plaintext));
        }
    }
    tx.commit().await.unwrap();
    store.close().await;
    all.sort();
    all
}

async fn a_rotation_reseals_every_secret_under_the_new_key(engine: Engine) {
    let mut srv = TestServer::start(engine).await;
    // Secrets of every kind: a webhook endpoint's (rotated once, so it has a previous one),
    // the Stripe key and signing secrets, and an idempotent answer.
    let (status, endpoint) = srv
        .post(
            "/v1/webhooks",
            &srv.admin_key,
            json!({"url": "https://hooks.example.com/a"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = endpoint["id"].as_str().unwrap();
    let (status, _) = srv
        .post(
            &format!("/v1/webhooks/{id}/rotate-secret"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = srv
        .put(
            "/v1/stripe",
            &srv.admin_key,
            json!({"secret_key": "sk_test_51Hrotationkey4242", "webhook_secrets": ["whsec_rot_1"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = srv
        .client
        .post(srv.url("/v1/partners"))
        .bearer_auth(&srv.admin_key)
        .header("idempotency-key", "rotation-1")
        .json(&json!({"email": "ada@example.com", "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    srv.running.take().unwrap().shutdown().await.unwrap();

    let old = SecretBox::from_encoded_key(SECRETS_KEY).unwrap();
    let new = SecretBox::from_encoded_key(NEW_KEY).unwrap();
    let before = opened(&srv.db, &srv.tenant_id, &old).await;
    assert_eq!(before.len(), 6, "{before:?}");

    // The new key with the old one as previous: the server opens what the old key sealed.
    let config = srv.db.config(&[
        "--secrets-key",
        NEW_KEY,
        "--secrets-key-previous",
        SECRETS_KEY,
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = switchyard::app::start(config, srv.clock.clone(), listener)
        .await
        .unwrap();
    srv.base = format!("http://{}", running.addr);
    srv.running = Some(running);
    let (status, shown) = srv.get("/v1/stripe", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["has_secret_key"], true);
    srv.running.take().unwrap().shutdown().await.unwrap();

    // Rotate, twice: the second run finds everything current.
    let rotate = |db: &TestDb| {
        run(switchyard(db)
            .env("SWITCHYARD_SECRETS_KEY", NEW_KEY)
            .env("SWITCHYARD_SECRETS_KEY_PREVIOUS", SECRETS_KEY)
            .args(["secrets", "rotate"]))
    };
    let first = rotate(&srv.db);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout(&first).contains("re-sealed 6 secrets under the current key (0 were already"),
        "{}",
        stdout(&first)
    );
    let second = rotate(&srv.db);
    assert!(stdout(&second).contains("re-sealed 0 secrets under the current key (6 were"));

    // Every secret now opens with the new key alone, unchanged.
    assert_eq!(opened(&srv.db, &srv.tenant_id, &new).await, before);
    // The new key alone runs the server: the webhook still signs with its own secret.
    let config = srv.db.config(&["--secrets-key", NEW_KEY]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = switchyard::app::start(config, srv.clock.clone(), listener)
        .await
        .unwrap();
    srv.base = format!("http://{}", running.addr);
    srv.running = Some(running);
    let (status, shown) = srv.get("/v1/stripe", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["webhook_secret_count"], 1);
    srv.stop().await;
}

/// `SEALED` lists every column that holds a sealed secret: any column named `*_sealed`, and
/// the webhook endpoints' secrets.
#[tokio::test]
async fn every_sealed_column_is_rotated() {
    let db = TestDb::create(Engine::Sqlite).await;
    let store = switchyard::app::open_migrated(&db.config(&[]))
        .await
        .unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut found = Vec::new();
    for (table,) in tables {
        let columns: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(store.pool())
            .await
            .unwrap();
        for (column,) in columns {
            let secret = column.ends_with("_sealed")
                || (table == "webhook_endpoints" && column.ends_with("secret"));
            if secret {
                found.push((table.clone(), column));
            }
        }
    }
    found.sort();
    let mut listed: Vec<(String, String)> = SEALED
        .iter()
        .map(|(t, _, c)| (t.to_string(), c.to_string()))
        .collect();
    listed.sort();
    assert_eq!(found, listed);
    store.close().await;
}
