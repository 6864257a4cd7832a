//! Minting, listing and revoking API keys, and what each key may see.

mod common;

use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::json;

on_both_engines!(
    the_first_admin_key_knows_its_tenant,
    an_admin_mints_a_scoped_key_whose_secret_is_shown_once,
    revocation_is_immediate,
    lists_page_newest_first_and_filter_by_scope,
    invalid_key_requests_get_field_errors,
    partner_keys_act_as_their_partner,
    the_last_admin_key_cannot_be_revoked,
);

async fn the_first_admin_key_knows_its_tenant(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, me) = srv.get("/v1/whoami", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["tenant_slug"], "default");
    assert_eq!(me["tenant_id"], srv.tenant_id.as_str());
    assert_eq!(me["kind"], "admin");
    assert_eq!(
        me["scopes"],
        json!([
            "events:write",
            "partners:read",
            "partners:write",
            "commissions:read",
            "webhooks:read",
            "webhooks:write",
            "postbacks:write",
            "payouts:read"
        ])
    );
    srv.stop().await;
}

async fn an_admin_mints_a_scoped_key_whose_secret_is_shown_once(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, created) = srv
        .post(
            "/v1/api-keys",
            &srv.admin_key,
            json!({"name": "Zapier", "scopes": ["webhooks:read", "webhooks:write", "webhooks:read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let plaintext = created["key"].as_str().unwrap();
    assert!(plaintext.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["kind"], "scoped");
    assert_eq!(
        created["scopes"],
        json!(["webhooks:read", "webhooks:write"])
    );

    let (_, me) = srv.get("/v1/whoami", plaintext).await;
    assert_eq!(me["key_id"], created["id"]);
    assert_eq!(me["scopes"], json!(["webhooks:read", "webhooks:write"]));

    let (status, list) = srv.get("/v1/api-keys", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == created["id"])
        .expect("the new key is listed");
    assert!(listed.get("key").is_none(), "lists never show the secret");
    assert!(!list.to_string().contains(plaintext));
    assert!(listed["last_used_at"].is_string(), "whoami recorded a use");

    // Nothing in the database holds the plaintext either.
    let stored: Vec<(String,)> = sqlx_rows(&srv, "SELECT secret_hash FROM api_keys").await;
    assert!(stored
        .iter()
        .all(|(hash,)| !hash.contains(&plaintext[16..])));
    srv.stop().await;
}

async fn sqlx_rows(srv: &TestServer, sql: &str) -> Vec<(String,)> {
    let db = switchyard::db::Db::connect(&srv.db.url, 1).await.unwrap();
    let mut tx = db.read(&srv.tenant_id).await.unwrap();
    let rows = sqlx::query_as(sql).fetch_all(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    db.close().await;
    rows
}

async fn revocation_is_immediate(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (id, key) = srv
        .mint(json!({"name": "CRM", "scopes": ["events:write"]}))
        .await;
    assert_eq!(srv.get("/v1/whoami", &key).await.0, StatusCode::OK);

    let (status, _) = srv
        .delete(&format!("/v1/api-keys/{id}"), &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let response = srv.get("/v1/whoami", &key).await;
    assert_problem(&response, StatusCode::UNAUTHORIZED, "key_revoked");

    // Revoking again is harmless; revoking what does not exist is a 404.
    assert_eq!(
        srv.delete(&format!("/v1/api-keys/{id}"), &srv.admin_key)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let missing = srv
        .delete(
            "/v1/api-keys/key_01J00000000000000000000000",
            &srv.admin_key,
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "not_found");

    let (_, list) = srv.get("/v1/api-keys", &srv.admin_key).await;
    let revoked = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string());
    srv.stop().await;
}

async fn lists_page_newest_first_and_filter_by_scope(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut minted = Vec::new();
    for i in 0..5 {
        let scope = if i % 2 == 0 {
            "events:write"
        } else {
            "partners:read"
        };
        minted.push(
            srv.mint(json!({"name": format!("key {i}"), "scopes": [scope]}))
                .await
                .0,
        );
    }

    let mut seen = Vec::new();
    let mut path = "/v1/api-keys?limit=2".to_owned();
    loop {
        let (status, page) = srv.get(&path, &srv.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/api-keys?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    // Newest first: the five minted keys in reverse, then the first-start admin key.
    let mut expected: Vec<String> = minted.iter().rev().cloned().collect();
    assert_eq!(&seen[..5], &expected[..]);
    assert_eq!(seen.len(), 6);

    let (_, filtered) = srv
        .get("/v1/api-keys?scope=events:write", &srv.admin_key)
        .await;
    let ids: Vec<_> = filtered["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    expected = vec![minted[4].clone(), minted[2].clone(), minted[0].clone()];
    assert_eq!(&ids[..3], &expected[..]);
    assert_eq!(
        ids.len(),
        4,
        "admin keys hold every scope, so they are listed too"
    );

    let bad_limit = srv.get("/v1/api-keys?limit=500", &srv.admin_key).await;
    assert_eq!(
        assert_problem(
            &bad_limit,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed"
        )["errors"][0]["field"],
        "limit"
    );
    let bad_cursor = srv.get("/v1/api-keys?cursor=garbage", &srv.admin_key).await;
    assert_problem(
        &bad_cursor,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let bad_scope = srv.get("/v1/api-keys?scope=root", &srv.admin_key).await;
    assert_problem(
        &bad_scope,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    srv.stop().await;
}

async fn invalid_key_requests_get_field_errors(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let cases = [
        (json!({"name": "", "scopes": ["events:write"]}), "name"),
        (json!({"name": "x", "scopes": ["events:delete"]}), "scopes"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "kind": "root"}), "kind"),
        (
            json!({"name": "x", "kind": "admin", "scopes": ["events:write"]}),
            "scopes",
        ),
        (json!({"name": "x", "kind": "partner"}), "partner_id"),
        (
            json!({"name": "x", "kind": "partner", "partner_id": "bob"}),
            "partner_id",
        ),
        (
            json!({"name": "x", "scopes": ["events:write"], "partner_id": "ptr_01J00000000000000000000000"}),
            "partner_id",
        ),
    ];
    for (body, field) in cases {
        let response = srv.post("/v1/api-keys", &srv.admin_key, body.clone()).await;
        let problem = assert_problem(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    srv.stop().await;
}

async fn partner_keys_act_as_their_partner(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let partner = srv.partner("portal@example.com").await;
    let partner = partner["id"].as_str().unwrap();
    let (_, key) = srv
        .mint(json!({"name": "partner portal", "kind": "partner", "partner_id": partner}))
        .await;
    let (status, me) = srv.get("/v1/whoami", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["kind"], "partner");
    assert_eq!(me["partner_id"], partner);
    assert_eq!(me["scopes"], json!([]));
    let response = srv.get("/v1/api-keys", &key).await;
    assert_problem(&response, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}

async fn the_last_admin_key_cannot_be_revoked(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, me) = srv.get("/v1/whoami", &srv.admin_key).await;
    let first = me["key_id"].as_str().unwrap().to_owned();
    let alone = srv
        .delete(&format!("/v1/api-keys/{first}"), &srv.admin_key)
        .await;
    assert_problem(&alone, StatusCode::CONFLICT, "cannot_revoke_last_admin_key");
    // Two admin keys revoking each other at once: one goes, the other stays.
    let (second, second_key) = srv
        .mint(json!({"name": "second admin", "kind": "admin"}))
        .await;
    let (revoke_second, revoke_first) = (
        format!("/v1/api-keys/{second}"),
        format!("/v1/api-keys/{first}"),
    );
    let (a, b) = tokio::join!(
        srv.delete(&revoke_second, &srv.admin_key),
        srv.delete(&revoke_first, &second_key),
    );
    let mut statuses = [a.0.as_u16(), b.0.as_u16()];
    statuses.sort();
    // The loser is refused as the last key, or (when the winner revoked its own key first)
    // as a revoked key.
    assert_eq!(statuses[0], 204, "{a:?} {b:?}");
    assert!([401, 409].contains(&statuses[1]), "{a:?} {b:?}");
    let survivors = [&srv.admin_key, &second_key];
    let alive = still_working(&srv, &survivors).await;
    assert_eq!(alive, 1, "exactly one admin key is left");
    srv.stop().await;
}

/// How many of `keys` still authenticate.
async fn still_working(srv: &TestServer, keys: &[&String]) -> usize {
    let mut alive = 0;
    for key in keys {
        if srv.get("/v1/whoami", key).await.0 == StatusCode::OK {
            alive += 1;
        }
    }
    alive
}
