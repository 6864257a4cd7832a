//! `Idempotency-Key` on POST requests: a retry gets the first answer and creates nothing; the
//! same key with another request, or while the first runs, is refused; keys are per tenant and
//! per caller, and kept answers are sealed.

mod common;

use common::{assert_problem, create_tenant, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    a_retried_create_gets_the_first_answer_and_creates_nothing,
    a_key_reused_for_another_request_is_refused,
    a_request_still_running_holds_its_key,
    keys_belong_to_their_tenant,
    keys_are_forgotten_after_a_day,
    an_answer_is_replayed_only_to_the_key_that_made_it,
    a_refusal_kept_for_one_key_is_not_replayed_to_another,
    kept_answers_hold_no_secret_in_clear,
    a_second_request_while_the_first_runs_is_refused,
);

/// POSTs `body` with `Idempotency-Key: key`; (status, replayed header, JSON body).
async fn post_with_key(
    srv: &TestServer,
    api_key: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(srv.url(path))
        .bearer_auth(api_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, response.json().await.unwrap())
}

/// Runs `sql` on the database as its owner (to stage a state the API cannot reach).
async fn run(srv: &TestServer, sql: &str) {
    let db = srv.inspect().await;
    sqlx::query(sql).execute(db.pool()).await.unwrap();
    db.close().await;
}

/// Makes the first request with `key` look `age_ms` old.
async fn age(srv: &TestServer, key: &str, age_ms: i64) {
    let at = srv.clock.now_ms() - age_ms;
    run(
        srv,
        &format!("UPDATE idempotency_keys SET created_at = {at} WHERE key = '{key}'"),
    )
    .await;
}

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn count(srv: &TestServer, sql: &str) -> i64 {
    let db = srv.inspect().await;
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap();
    db.close().await;
    n
}

async fn a_retried_create_gets_the_first_answer_and_creates_nothing(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let body = json!({"email": "ada@example.com", "name": "Ada"});
    let first = post_with_key(&srv, &srv.admin_key, "/v1/partners", "create-ada", &body).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.2);
    assert_eq!(first.1, None, "a first answer is not a replay");

    let retry = post_with_key(&srv, &srv.admin_key, "/v1/partners", "create-ada", &body).await;
    assert_eq!(retry.0, StatusCode::CREATED);
    assert_eq!(retry.1.as_deref(), Some("true"));
    assert_eq!(retry.2, first.2, "the very same partner, byte for byte");
    assert_eq!(count(&srv, "SELECT COUNT(*) FROM partners").await, 1);
    let created = srv
        .messages()
        .await
        .into_iter()
        .filter(|(t, _)| t == "partner.created")
        .count();
    assert_eq!(created, 1, "one partner.created, not one per retry");

    // An error answer is kept too: the retry of a refused request is refused the same way,
    // even once the conflict is gone.
    let dup = json!({"email": "ADA@example.com", "name": "Ada again"});
    let refused = post_with_key(&srv, &srv.admin_key, "/v1/partners", "dup", &dup).await;
    assert_eq!(refused.0, StatusCode::CONFLICT, "{}", refused.2);
    let id = first.2["id"].as_str().unwrap();
    run(
        &srv,
        &format!("UPDATE partners SET email = 'moved@example.com' WHERE id = '{id}'"),
    )
    .await;
    let again = post_with_key(&srv, &srv.admin_key, "/v1/partners", "dup", &dup).await;
    assert_eq!((again.0, again.2), (refused.0, refused.2));
    assert_eq!(count(&srv, "SELECT COUNT(*) FROM partners").await, 1);

    // Without the header, nothing is remembered.
    let (status, _) = srv
        .post(
            "/v1/partners",
            &srv.admin_key,
            json!({"email": "bo@example.com", "name": "Bo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        count(&srv, "SELECT COUNT(*) FROM idempotency_keys").await,
        2
    );
}

async fn a_key_reused_for_another_request_is_refused(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let ada = json!({"email": "ada@example.com", "name": "Ada"});
    let first = post_with_key(&srv, &srv.admin_key, "/v1/partners", "k1", &ada).await;
    assert_eq!(first.0, StatusCode::CREATED);

    let bo = json!({"email": "bo@example.com", "name": "Bo"});
    let other_body = post_with_key(&srv, &srv.admin_key, "/v1/partners", "k1", &bo).await;
    assert_problem(
        &(other_body.0, other_body.2),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let other_path = post_with_key(&srv, &srv.admin_key, "/v1/campaigns", "k1", &ada).await;
    assert_problem(
        &(other_path.0, other_path.2),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(count(&srv, "SELECT COUNT(*) FROM partners").await, 1);

    let too_long = "k".repeat(256);
    let refused = post_with_key(&srv, &srv.admin_key, "/v1/partners", &too_long, &bo).await;
    assert_problem(
        &(refused.0, refused.2),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    );
}

async fn a_request_still_running_holds_its_key(engine: Engine) {
    let srv = TestServer::start(engine).await;
    // A first request that has begun and not answered (as if still running): its key is held.
    let body = json!({"email": "ada@example.com", "name": "Ada"});
    let first = post_with_key(&srv, &srv.admin_key, "/v1/partners", "held", &body).await;
    assert_eq!(first.0, StatusCode::CREATED);
    run(
        &srv,
        "UPDATE idempotency_keys SET status_code = NULL, response_sealed = NULL",
    )
    .await;
    let busy = post_with_key(&srv, &srv.admin_key, "/v1/partners", "held", &body).await;
    assert_problem(
        &(busy.0, busy.2),
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
    );

    // One that never answered within a minute died with its process: a retry runs (and here
    // meets the partner the first one created).
    age(&srv, "held", 61_000).await;
    let retried = post_with_key(&srv, &srv.admin_key, "/v1/partners", "held", &body).await;
    assert_problem(&(retried.0, retried.2), StatusCode::CONFLICT, "email_taken");
    assert_eq!(retried.1, None, "it ran; it is not a replay");
}

async fn keys_belong_to_their_tenant(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, other_admin) = create_tenant(&srv, "other").await;
    let body = json!({"email": "ada@example.com", "name": "Ada"});
    let mine = post_with_key(&srv, &srv.admin_key, "/v1/partners", "same", &body).await;
    let theirs = post_with_key(&srv, &other_admin, "/v1/partners", "same", &body).await;
    assert_eq!(mine.0, StatusCode::CREATED);
    assert_eq!(theirs.0, StatusCode::CREATED, "{}", theirs.2);
    assert_eq!(theirs.1, None);
    assert_ne!(mine.2["id"], theirs.2["id"]);

    // GET requests ignore the header.
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .get(srv.url("/v1/partners"))
            .bearer_auth(&srv.admin_key)
            .header("Idempotency-Key", "same")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
}

async fn keys_are_forgotten_after_a_day(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let ada = json!({"email": "ada@example.com", "name": "Ada"});
    let bo = json!({"email": "bo@example.com", "name": "Bo"});
    for (key, body) in [("old", &ada), ("new", &bo)] {
        let created = post_with_key(&srv, &srv.admin_key, "/v1/partners", key, body).await;
        assert_eq!(created.0, StatusCode::CREATED);
    }
    age(&srv, "old", DAY_MS + 1).await;

    // Past its day a key is free again, even before the purge: a new request runs.
    let cy = json!({"email": "cy@example.com", "name": "Cy"});
    let reused = post_with_key(&srv, &srv.admin_key, "/v1/partners", "old", &cy).await;
    assert_eq!(reused.0, StatusCode::CREATED, "{}", reused.2);
    assert_eq!(reused.1, None);

    age(&srv, "old", DAY_MS + 1).await;
    let state = &srv.running.as_ref().unwrap().state;
    let purged = switchyard::http::idempotency::purge_expired(state)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left: Vec<(String,)> = {
        let db = srv.inspect().await;
        let rows = sqlx::query_as("SELECT key FROM idempotency_keys")
            .fetch_all(db.pool())
            .await
            .unwrap();
        db.close().await;
        rows
    };
    assert_eq!(left, [("new".to_owned(),)]);
}

/// A key minted by the admin as `body` describes; its plaintext.
async fn key_of(srv: &TestServer, body: Value) -> String {
    srv.mint(body).await.1
}

async fn an_answer_is_replayed_only_to_the_key_that_made_it(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let reader = key_of(
        &srv,
        json!({"name": "reader", "kind": "scoped", "scopes": ["partners:read"]}),
    )
    .await;
    let partner = srv.partner("ada@example.com").await;
    let partner_key = key_of(
        &srv,
        json!({"name": "ada", "kind": "partner", "partner_id": partner["id"]}),
    )
    .await;

    // The admin mints an admin key under `order-42`.
    let mint = json!({"name": "ci", "kind": "admin"});
    let first = post_with_key(&srv, &srv.admin_key, "/v1/api-keys", "order-42", &mint).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.2);
    let minted = first.2["key"].as_str().unwrap().to_owned();

    // The same request from a reader and from a partner is their own request: refused, and
    // without the admin's key.
    for caller in [&reader, &partner_key] {
        let (status, replayed, body) =
            post_with_key(&srv, caller, "/v1/api-keys", "order-42", &mint).await;
        assert_problem(
            &(status, body.clone()),
            StatusCode::FORBIDDEN,
            "forbidden_scope",
        );
        assert_eq!(replayed, None, "not a replay");
        assert!(!body.to_string().contains(&minted));
    }

    // A webhook's signing secret likewise: the writer who subscribed gets it again, a reader
    // is refused.
    let writer = key_of(
        &srv,
        json!({"name": "zap", "kind": "scoped", "scopes": ["webhooks:write"]}),
    )
    .await;
    let hook = json!({"url": "https://example.com/hook", "event_types": ["partner.created"]});
    let subscribed = post_with_key(&srv, &writer, "/v1/webhooks", "sub-1", &hook).await;
    assert_eq!(subscribed.0, StatusCode::CREATED, "{}", subscribed.2);
    let secret = subscribed.2["secret"].as_str().unwrap().to_owned();
    let again = post_with_key(&srv, &writer, "/v1/webhooks", "sub-1", &hook).await;
    assert_eq!(
        (again.0, again.1.as_deref()),
        (StatusCode::CREATED, Some("true"))
    );
    assert_eq!(again.2["secret"], secret.as_str());
    let (status, replayed, body) =
        post_with_key(&srv, &reader, "/v1/webhooks", "sub-1", &hook).await;
    assert_problem(
        &(status, body.clone()),
        StatusCode::FORBIDDEN,
        "forbidden_scope",
    );
    assert_eq!(replayed, None);
    assert!(!body.to_string().contains(&secret));

    // Another admin key with the same Idempotency-Key runs its own request: a second key.
    let other_admin = key_of(&srv, json!({"name": "ops", "kind": "admin"})).await;
    let fresh = post_with_key(&srv, &other_admin, "/v1/api-keys", "order-42", &mint).await;
    assert_eq!((fresh.0, fresh.1), (StatusCode::CREATED, None));
    assert_ne!(fresh.2["key"], first.2["key"]);
}

async fn a_refusal_kept_for_one_key_is_not_replayed_to_another(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let partner = srv.partner("ada@example.com").await;
    let partner_key = key_of(
        &srv,
        json!({"name": "ada", "kind": "partner", "partner_id": partner["id"]}),
    )
    .await;
    let mint = json!({"name": "ci", "kind": "admin"});
    let refused = post_with_key(&srv, &partner_key, "/v1/api-keys", "order-7", &mint).await;
    assert_problem(
        &(refused.0, refused.2),
        StatusCode::FORBIDDEN,
        "forbidden_scope",
    );

    let admin = post_with_key(&srv, &srv.admin_key, "/v1/api-keys", "order-7", &mint).await;
    assert_eq!(admin.0, StatusCode::CREATED, "{}", admin.2);
    assert_eq!(admin.1, None, "the admin's request ran");
    assert!(admin.2["key"].as_str().unwrap().starts_with("sy_"));
}

async fn kept_answers_hold_no_secret_in_clear(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let minted = post_with_key(
        &srv,
        &srv.admin_key,
        "/v1/api-keys",
        "mint",
        &json!({"name": "ci", "kind": "admin"}),
    )
    .await;
    let hook = post_with_key(
        &srv,
        &srv.admin_key,
        "/v1/webhooks",
        "hook",
        &json!({"url": "https://example.com/hook"}),
    )
    .await;
    let key = minted.2["key"].as_str().unwrap();
    let secret = hook.2["secret"].as_str().unwrap();
    let db = srv.inspect().await;
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT fingerprint, response_sealed FROM idempotency_keys")
            .fetch_all(db.pool())
            .await
            .unwrap();
    db.close().await;
    assert_eq!(rows.len(), 2);
    for (fingerprint, sealed) in rows {
        let sealed = sealed.expect("the answer is kept");
        assert!(sealed.starts_with("v1:"), "sealed: {sealed}");
        for text in [&fingerprint, &sealed] {
            assert!(!text.contains(key) && !text.contains(secret));
        }
    }
    // Nowhere in the files either (SQLite: the database and its write-ahead log).
    if let Some(path) = srv.db.url.strip_prefix("sqlite:") {
        let wal = format!("{path}-wal");
        for file in [path, wal.as_str()] {
            let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            for needle in [key, secret] {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "{needle} in clear in {file}");
            }
        }
    }
    // And the replay still opens them.
    let replay = post_with_key(
        &srv,
        &srv.admin_key,
        "/v1/api-keys",
        "mint",
        &json!({"name": "ci", "kind": "admin"}),
    )
    .await;
    assert_eq!(replay.2["key"], key);
}

/// Two real requests with one key: the second, sent while the first is inside its handler, is
/// 409 `idempotency_key_in_use`. The first is a webhook test fire to an endpoint that accepts the
/// connection and holds it, so the test knows when the first request is running.
async fn a_second_request_while_the_first_runs_is_refused(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let (status, endpoint) = srv
        .post("/v1/webhooks", &srv.admin_key, json!({"url": hook}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let path = format!("/v1/webhooks/{}/test", endpoint["id"].as_str().unwrap());

    let first = {
        let (url, key) = (srv.url(&path), srv.admin_key.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "fire-1")
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // The first request is running once its delivery has connected.
    let (held, _) = listener.accept().await.unwrap();
    let second = post_with_key(&srv, &srv.admin_key, &path, "fire-1", &json!({})).await;
    assert_problem(
        &(second.0, second.2),
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
    );
    drop(held);
    assert_eq!(
        first.await.unwrap(),
        StatusCode::OK,
        "the first one answers"
    );
    // Once it has, the same request gets its answer again.
    let again = post_with_key(&srv, &srv.admin_key, &path, "fire-1", &json!({})).await;
    assert_eq!(
        (again.0, again.1.as_deref()),
        (StatusCode::OK, Some("true"))
    );
}
