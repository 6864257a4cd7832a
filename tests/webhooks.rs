//! Webhook endpoints and signed deliveries, on both engines, against a real local receiver.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::receiver::{verify_with_reference_library, Received, Receiver};
use common::{assert_problem, create_tenant, Engine, TestServer};
use serde_json::{json, Value};

on_both_engines!(
    platforms_subscribe_find_resubscribe_and_unsubscribe,
    a_message_reaches_every_subscribed_endpoint_signed,
    a_failed_delivery_retries_on_the_stored_schedule,
    retry_after_and_410_are_honoured,
    internal_addresses_are_refused_at_delivery,
    invalid_subscriptions_get_field_errors,
    admins_see_the_attempt_timeline_and_replay_failures,
    a_rotated_secret_signs_beside_the_previous_one,
    the_catalog_serves_schemas_its_examples_satisfy,
    a_test_fire_reaches_the_endpoint_whatever_its_filter,
    a_rate_limited_endpoint_gets_every_delivery_in_its_own_time,
    an_endpoint_failing_past_the_window_is_disabled,
    messages_fanned_out_together_reach_each_subscriber_once,
);

async fn subscribe(srv: &TestServer, url: &str, types: Value) -> Value {
    let (status, endpoint) = srv
        .post(
            "/v1/webhooks",
            &srv.admin_key,
            json!({"url": url, "event_types": types, "description": "test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    endpoint
}

async fn emit(srv: &TestServer, event_type: &str, data: Value) -> String {
    emit_for(srv, &srv.tenant_id, event_type, data).await
}

/// Emits as a slice of `tenant` does: in a committed transaction, its handoff started.
async fn emit_for(srv: &TestServer, tenant: &str, event_type: &str, data: Value) -> String {
    let state = &srv.running.as_ref().unwrap().state;
    let mut tx = state.db.write(tenant).await.unwrap();
    let mut handoff = state.queue.handoff();
    let id = switchyard::outbox::emit(
        &mut tx,
        &mut handoff,
        &state.clock,
        tenant,
        event_type,
        data,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    handoff.start();
    id
}

/// The `v1,` signature `secret` gives the delivery `got` of `message` at the timestamp it was
/// sent with, as `signing::sign` computes it (whose unit test checks the DESIGN.md vector).
fn signature(secret: &str, message: &str, got: &Received) -> String {
    let timestamp: i64 = got.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    switchyard::webhooks::signing::sign(secret, message, timestamp, &got.body).unwrap()
}

/// (delivery status, attempts) of the delivery of `message` to `endpoint`, once it exists.
async fn delivery(srv: &TestServer, message: &str, endpoint: &str) -> Option<(String, i64)> {
    let state = &srv.running.as_ref().unwrap().state;
    let mut tx = state.db.read(&srv.tenant_id).await.unwrap();
    let row = sqlx::query_as(
        "SELECT status, attempts FROM deliveries WHERE message_id = $1 AND endpoint_id = $2",
    )
    .bind(message)
    .bind(endpoint)
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    row
}

async fn wait_for_delivery(
    srv: &TestServer,
    message: &str,
    endpoint: &str,
    status: &str,
    attempts: i64,
) {
    for _ in 0..500 {
        if delivery(srv, message, endpoint).await == Some((status.to_owned(), attempts)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "delivery never reached {status}/{attempts}: {:?}",
        delivery(srv, message, endpoint).await
    );
}

/// When the waiting delivery job will run next (Unix ms), once its retry is recorded.
async fn next_run(srv: &TestServer) -> i64 {
    let state = &srv.running.as_ref().unwrap().state;
    for _ in 0..500 {
        let waiting: Option<(i64,)> = sqlx::query_as(
            "SELECT run_at FROM jobs WHERE kind = 'webhooks.deliver' AND state = 'available'",
        )
        .fetch_optional(state.queue.pool())
        .await
        .unwrap();
        if let Some((run_at,)) = waiting {
            return run_at;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no delivery job is waiting for a retry");
}

async fn platforms_subscribe_find_resubscribe_and_unsubscribe(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, zapier) = srv
        .mint(json!({"name": "Zapier", "scopes": ["webhooks:read", "webhooks:write"]}))
        .await;
    let url = "https://hooks.zapier.example/catch/123";
    let body = json!({"url": url, "event_types": ["commission.accrued", "partner.created"]});
    let (status, created) = srv.post("/v1/webhooks", &zapier, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        created["event_types"],
        json!(["commission.accrued", "partner.created"])
    );
    assert_eq!(created["status"], "enabled");

    // Re-subscribing (types in another order) returns the same endpoint, without the secret.
    let reordered = json!({"url": url, "event_types": ["partner.created", "commission.accrued"]});
    let (status, again) = srv.post("/v1/webhooks", &zapier, reordered).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], created["id"]);
    assert!(again.get("secret").is_none());

    let (_, found) = srv.get(&format!("/v1/webhooks?url={url}"), &zapier).await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["id"], created["id"]);

    let id = created["id"].as_str().unwrap();
    let (status, _) = srv.delete(&format!("/v1/webhooks/{id}"), &zapier).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_problem(
        &srv.get(&format!("/v1/webhooks/{id}"), &zapier).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (_, gone) = srv.get(&format!("/v1/webhooks?url={url}"), &zapier).await;
    assert_eq!(gone["data"], json!([]));
    let (status, fresh) = srv.post("/v1/webhooks", &zapier, body).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "after unsubscribing, subscribing creates anew"
    );
    assert_ne!(fresh["id"], created["id"]);
    srv.stop().await;
}

async fn a_message_reaches_every_subscribed_endpoint_signed(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (mut accrued, mut everything, mut other) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let accrued_ep = subscribe(&srv, &accrued.url, json!(["commission.accrued"])).await;
    let everything_ep = subscribe(&srv, &everything.url, json!([])).await;
    subscribe(&srv, &other.url, json!(["payout.paid"])).await;

    let message = emit(
        &srv,
        "commission.accrued",
        json!({"commission_id": "com_1", "amount": 1250, "currency": "EUR"}),
    )
    .await;
    for (receiver, endpoint) in [
        (&mut accrued, &accrued_ep),
        (&mut everything, &everything_ep),
    ] {
        let got = receiver.next().await;
        assert_eq!(got.headers["webhook-id"], message.as_str());
        assert_eq!(got.headers["content-type"], "application/json");
        let envelope: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(envelope["id"], message.as_str());
        assert_eq!(envelope["type"], "commission.accrued");
        assert_eq!(envelope["data"]["amount"], 1250);
        assert!(envelope["timestamp"].as_str().unwrap().ends_with('Z'));

        let secret = endpoint["secret"].as_str().unwrap();
        let expected = signature(secret, &message, &got);
        assert_eq!(got.headers["webhook-signature"], expected.as_str());
        verify_with_reference_library(secret, &got);

        let id = endpoint["id"].as_str().unwrap();
        wait_for_delivery(&srv, &message, id, "succeeded", 1).await;
        let (_, counters) = srv.get(&format!("/v1/webhooks/{id}"), &srv.admin_key).await;
        assert_eq!(
            (
                counters["success_count"].as_i64(),
                counters["last_status"].as_i64()
            ),
            (Some(1), Some(200))
        );
        assert!(counters["last_success_at"].is_string());
        assert!(
            counters["latency_p50_ms"].as_i64().is_some()
                && counters["latency_p95_ms"].as_i64().is_some()
        );
        let metrics = srv.metrics().await;
        let line = format!(
            r#"switchyard_webhook_endpoint_successes{{tenant="{}",endpoint="{id}"}} 1"#,
            srv.tenant_id
        );
        assert!(metrics.contains(&line), "{metrics}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !other.has_more(),
        "an endpoint not subscribed to the type gets nothing"
    );
    srv.stop().await;
}

async fn a_failed_delivery_retries_on_the_stored_schedule(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut receiver = Receiver::start().await;
    receiver.answer(500, Vec::new());
    let endpoint = subscribe(&srv, &receiver.url, json!([])).await;
    let id = endpoint["id"].as_str().unwrap();
    let before = srv.clock.now_ms();
    let message = emit(&srv, "partner.created", json!({"partner_id": "ptr_1"})).await;
    receiver.next().await;
    wait_for_delivery(&srv, &message, id, "pending", 1).await;
    let delay = next_run(&srv).await - before;
    assert!(
        (4_000..=6_500).contains(&delay),
        "first retry after 5 s ± 20%: {delay} ms"
    );
    let (_, counters) = srv.get(&format!("/v1/webhooks/{id}"), &srv.admin_key).await;
    assert_eq!(
        (
            counters["failure_count"].as_i64(),
            counters["consecutive_failures"].as_i64()
        ),
        (Some(1), Some(1))
    );

    srv.clock.advance(Duration::from_secs(7));
    let retried = receiver.next().await;
    assert_eq!(
        retried.headers["webhook-id"],
        message.as_str(),
        "the same message id on every attempt"
    );
    wait_for_delivery(&srv, &message, id, "succeeded", 2).await;
    let (_, counters) = srv.get(&format!("/v1/webhooks/{id}"), &srv.admin_key).await;
    assert_eq!(counters["consecutive_failures"], 0);
    srv.stop().await;
}

async fn retry_after_and_410_are_honoured(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut busy = Receiver::start().await;
    busy.answer(429, vec![("retry-after", "120")]);
    let busy_ep = subscribe(&srv, &busy.url, json!(["partner.created"])).await;
    let before = srv.clock.now_ms();
    let message = emit(&srv, "partner.created", json!({})).await;
    busy.next().await;
    wait_for_delivery(
        &srv,
        &message,
        busy_ep["id"].as_str().unwrap(),
        "pending",
        1,
    )
    .await;
    let delay = next_run(&srv).await - before;
    assert!(
        (120_000..=121_500).contains(&delay),
        "Retry-After: 120 replaces the schedule: {delay} ms"
    );

    let mut gone = Receiver::start().await;
    gone.answer(410, Vec::new());
    let gone_ep = subscribe(&srv, &gone.url, json!(["payout.paid"])).await;
    let gone_id = gone_ep["id"].as_str().unwrap();
    let message = emit(&srv, "payout.paid", json!({})).await;
    gone.next().await;
    wait_for_delivery(&srv, &message, gone_id, "failed", 1).await;
    let (_, endpoint) = srv
        .get(&format!("/v1/webhooks/{gone_id}"), &srv.admin_key)
        .await;
    assert_eq!(endpoint["status"], "disabled");
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));

    let (status, resumed) = srv
        .post(
            &format!("/v1/webhooks/{gone_id}/resume"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, resumed["status"].as_str()),
        (StatusCode::OK, Some("enabled"))
    );
    srv.stop().await;
}

async fn internal_addresses_are_refused_at_delivery(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let receiver = Receiver::start().await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let endpoint = subscribe(&srv, &format!("http://[::1]:{port}/hook"), json!([])).await;
    let id = endpoint["id"].as_str().unwrap();
    let message = emit(&srv, "partner.created", json!({})).await;
    wait_for_delivery(&srv, &message, id, "pending", 1).await;
    let state = &srv.running.as_ref().unwrap().state;
    let mut tx = state.db.read(&srv.tenant_id).await.unwrap();
    let (class, code): (Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT error_class, status_code FROM delivery_attempts WHERE endpoint_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((class.as_deref(), code), (Some("ssrf_blocked"), None));
    srv.stop().await;
}

async fn invalid_subscriptions_get_field_errors(engine: Engine) {
    let srv = TestServer::start(engine).await;
    for (body, field) in [
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "ftp://example.com/x"}), "url"),
        (
            json!({"url": "https://example.com", "event_types": ["commission.exploded"]}),
            "event_types",
        ),
    ] {
        let response = srv.post("/v1/webhooks", &srv.admin_key, body).await;
        let problem = assert_problem(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let (_, reader) = srv
        .mint(json!({"name": "r", "scopes": ["webhooks:read"]}))
        .await;
    let response = srv
        .post(
            "/v1/webhooks",
            &reader,
            json!({"url": "https://example.com"}),
        )
        .await;
    assert_problem(&response, StatusCode::FORBIDDEN, "forbidden_scope");
    srv.stop().await;
}

async fn admins_see_the_attempt_timeline_and_replay_failures(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut receiver = Receiver::start().await;
    receiver.answer(410, Vec::new());
    let endpoint = subscribe(&srv, &receiver.url, json!([])).await;
    let id = endpoint["id"].as_str().unwrap();
    let message = emit(&srv, "partner.created", json!({"partner_id": "ptr_1"})).await;
    receiver.next().await;
    wait_for_delivery(&srv, &message, id, "failed", 1).await;

    let (status, page) = srv
        .get(&format!("/v1/webhooks/{id}/deliveries"), &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed = &page["data"][0];
    assert_eq!(
        (listed["message_id"].as_str(), listed["event_type"].as_str()),
        (Some(message.as_str()), Some("partner.created"))
    );
    assert_eq!(
        (listed["status"].as_str(), listed["last_status"].as_i64()),
        (Some("failed"), Some(410))
    );
    let delivery = listed["id"].as_str().unwrap().to_owned();

    // The endpoint was disabled by the 410; resume it and send the delivery again.
    srv.post(
        &format!("/v1/webhooks/{id}/resume"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let (status, _) = srv
        .post(
            &format!("/v1/deliveries/{delivery}/replay"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let again = receiver.next().await;
    assert_eq!(again.headers["webhook-id"], message.as_str());
    wait_for_delivery(&srv, &message, id, "succeeded", 2).await;
    let (_, detail) = srv
        .get(&format!("/v1/deliveries/{delivery}"), &srv.admin_key)
        .await;
    let codes: Vec<_> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64())
        .collect();
    assert_eq!(codes, vec![Some(410), Some(200)]);
    assert_eq!(detail["timeline"][1]["response_body"], "thanks");

    // Every failed delivery since a time, at once.
    receiver.answer(410, Vec::new());
    let second = emit(&srv, "payout.paid", json!({})).await;
    receiver.next().await;
    wait_for_delivery(&srv, &second, id, "failed", 1).await;
    srv.post(
        &format!("/v1/webhooks/{id}/resume"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let (status, replayed) = srv
        .post(
            &format!("/v1/webhooks/{id}/replay?since=2020-01-01T00:00:00Z"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, replayed["replayed"].as_i64()),
        (StatusCode::ACCEPTED, Some(1)),
        "only the failed one"
    );
    assert_eq!(receiver.next().await.headers["webhook-id"], second.as_str());
    wait_for_delivery(&srv, &second, id, "succeeded", 2).await;

    let bad_since = srv
        .post(
            &format!("/v1/webhooks/{id}/replay?since=yesterday"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_problem(
        &bad_since,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    srv.stop().await;
}

async fn a_rotated_secret_signs_beside_the_previous_one(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut receiver = Receiver::start().await;
    let endpoint = subscribe(&srv, &receiver.url, json!([])).await;
    let id = endpoint["id"].as_str().unwrap();
    let old = endpoint["secret"].as_str().unwrap();
    let (status, rotated) = srv
        .post(
            &format!("/v1/webhooks/{id}/rotate-secret"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);

    let message = emit(&srv, "partner.created", json!({})).await;
    let got = receiver.next().await;
    let sign = |secret| signature(secret, &message, &got);
    assert_eq!(
        got.headers["webhook-signature"].to_str().unwrap(),
        format!("{} {}", sign(new), sign(old))
    );
    verify_with_reference_library(new, &got);
    verify_with_reference_library(old, &got);

    // After the grace period only the new secret signs.
    srv.clock.advance(Duration::from_secs(25 * 3600));
    emit(&srv, "partner.created", json!({})).await;
    let later = receiver.next().await;
    assert_eq!(
        later.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    srv.stop().await;
}

async fn the_catalog_serves_schemas_its_examples_satisfy(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, catalog) = srv.get("/v1/event-types", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    let types = catalog["data"].as_array().unwrap();
    let names: Vec<_> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for expected in [
        "partner.created",
        "partner.activated",
        "partner.revoked",
        "partnership.approved",
        "attribution.created",
        "commission.accrued",
        "commission.approved",
        "commission.reversed",
        "payout.paid",
        "webhook.test",
    ] {
        assert!(names.contains(&expected), "{expected} is in the catalog");
    }
    for event_type in types {
        let validator =
            jsonschema::validator_for(&event_type["schema"]).expect("a valid JSON Schema");
        let example = &event_type["example"];
        assert!(
            validator.is_valid(example),
            "{}: {example}",
            event_type["name"]
        );
        let mut synthetic = example.clone();
        synthetic["_synthetic"] = json!(true);
        assert!(
            validator.is_valid(&synthetic),
            "{}: synthetic payloads validate",
            event_type["name"]
        );
        let mut broken = example.clone();
        let first = broken.as_object().unwrap().keys().next().unwrap().clone();
        broken.as_object_mut().unwrap().remove(&first);
        assert!(
            !validator.is_valid(&broken),
            "{}: the schema requires {first}",
            event_type["name"]
        );
    }
    srv.stop().await;
}

async fn a_test_fire_reaches_the_endpoint_whatever_its_filter(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut receiver = Receiver::start().await;
    let endpoint = subscribe(&srv, &receiver.url, json!(["payout.paid"])).await;
    let id = endpoint["id"].as_str().unwrap();
    let (status, fired) = srv
        .post(
            &format!("/v1/webhooks/{id}/test?event=commission.accrued"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fired}");
    assert_eq!(
        (fired["status"].as_str(), fired["event_type"].as_str()),
        (Some("succeeded"), Some("commission.accrued"))
    );
    assert_eq!(fired["timeline"][0]["status_code"], 200);

    let got = receiver.next().await;
    let envelope: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(envelope["type"], "commission.accrued");
    assert_eq!(envelope["data"]["_synthetic"], true);
    assert_eq!(envelope["id"], fired["message_id"]);
    verify_with_reference_library(endpoint["secret"].as_str().unwrap(), &got);

    let (_, catalog) = srv.get("/v1/event-types", &srv.admin_key).await;
    let schema = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "commission.accrued")
        .unwrap();
    let validator = jsonschema::validator_for(&schema["schema"]).unwrap();
    assert!(
        validator.is_valid(&envelope["data"]),
        "the synthetic payload matches its schema"
    );

    let unknown = srv
        .post(
            &format!("/v1/webhooks/{id}/test?event=commission.exploded"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    let problem = assert_problem(
        &unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("commission.accrued"));
    srv.stop().await;
}

async fn a_rate_limited_endpoint_gets_every_delivery_in_its_own_time(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut receiver = Receiver::start().await;
    let (status, endpoint) = srv
        .post(
            "/v1/webhooks",
            &srv.admin_key,
            json!({"url": receiver.url, "rate_limit": 2}),
        )
        .await;
    assert_eq!(
        (status, endpoint["rate_limit"].as_i64()),
        (StatusCode::CREATED, Some(2))
    );
    let id = endpoint["id"].as_str().unwrap();

    let started = std::time::Instant::now();
    let mut messages = Vec::new();
    for n in 0..6 {
        messages.push(emit(&srv, "partner.created", json!({ "n": n })).await);
    }
    let mut arrivals = Vec::new();
    for _ in 0..6 {
        receiver.next().await;
        arrivals.push(started.elapsed());
    }
    // Two per second with a burst of two: the sixth arrives about two seconds in.
    assert!(arrivals[5] >= Duration::from_millis(1400), "{arrivals:?}");
    for message in &messages {
        wait_for_delivery(&srv, message, id, "succeeded", 1).await;
    }

    let too_fast = srv
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(&srv.admin_key),
            Some(&json!({"rate_limit": 0})),
        )
        .await;
    assert_problem(
        &too_fast,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (_, kept) = srv
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(&srv.admin_key),
            Some(&json!({"description": "x"})),
        )
        .await;
    assert_eq!(kept["rate_limit"], 2, "left out, the limit stays");
    let (_, cleared) = srv
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(&srv.admin_key),
            Some(&json!({"rate_limit": null})),
        )
        .await;
    assert_eq!(cleared["rate_limit"], Value::Null);
    srv.stop().await;
}

async fn an_endpoint_failing_past_the_window_is_disabled(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--webhook-disable-after-hours", "24"]).await;
    let mut receiver = Receiver::start().await;
    for _ in 0..3 {
        receiver.answer(500, Vec::new());
    }
    let endpoint = subscribe(&srv, &receiver.url, json!([])).await;
    let id = endpoint["id"].as_str().unwrap();
    let first = emit(&srv, "partner.created", json!({})).await;
    receiver.next().await;
    wait_for_delivery(&srv, &first, id, "pending", 1).await;

    // A day of failures later (the clock moves; nothing sleeps), the next failure disables it.
    srv.clock.advance(Duration::from_secs(25 * 3600));
    receiver.next().await;
    wait_for_delivery(&srv, &first, id, "failed", 2).await;
    let (_, disabled) = srv.get(&format!("/v1/webhooks/{id}"), &srv.admin_key).await;
    assert_eq!(disabled["status"], "disabled");
    assert!(disabled["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("failing continuously"));
    assert_eq!(disabled["consecutive_failures"], 2);

    // Disabled endpoints receive nothing new.
    let second = emit(&srv, "partner.created", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        delivery(&srv, &second, id).await.is_none(),
        "no delivery is created for it"
    );
    srv.stop().await;
}

async fn messages_fanned_out_together_reach_each_subscriber_once(engine: Engine) {
    let srv = std::sync::Arc::new(TestServer::start(engine).await);
    let (beta, beta_key) = create_tenant(&srv, "beta").await;
    let (mut accrued, mut paid, mut beta_all) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let accrued_ep = subscribe(&srv, &accrued.url, json!(["commission.accrued"])).await;
    let paid_ep = subscribe(&srv, &paid.url, json!(["payout.paid"])).await;
    let (status, beta_ep) = srv
        .post(
            "/v1/webhooks",
            &beta_key,
            json!({"url": beta_all.url, "event_types": []}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{beta_ep}");

    // Deliveries cannot be written while the lock is held, so the fan-outs of everything emitted
    // meanwhile wait and then go out together (on PostgreSQL, where the emits themselves do not
    // wait: messages of both tenants and both types in one fan-out transaction).
    let (holder, lock) = srv.lock_table("deliveries").await;
    let mut emitted = tokio::task::JoinSet::new();
    for n in 0..12 {
        let srv = srv.clone();
        let (tenant, event_type) = match n % 3 {
            0 => (srv.tenant_id.clone(), "commission.accrued"),
            1 => (srv.tenant_id.clone(), "payout.paid"),
            _ => (beta.clone(), "commission.accrued"),
        };
        emitted.spawn(async move {
            let id = emit_for(&srv, &tenant, event_type, json!({ "n": n })).await;
            (n, id)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    holder.close().await;
    let mut sent = std::collections::HashMap::new();
    while let Some(done) = emitted.join_next().await {
        let (n, id) = done.unwrap();
        sent.insert(id, n);
    }

    for (receiver, endpoint, residue) in [
        (&mut accrued, &accrued_ep, 0),
        (&mut paid, &paid_ep, 1),
        (&mut beta_all, &beta_ep, 2),
    ] {
        let mut got = Vec::new();
        for _ in 0..4 {
            let delivery = receiver.next().await;
            let envelope: Value = serde_json::from_slice(&delivery.body).unwrap();
            let id = envelope["id"].as_str().unwrap().to_owned();
            assert_eq!(
                envelope["data"]["n"].as_i64(),
                sent.get(&id).copied(),
                "each delivery carries its own message"
            );
            assert_eq!(delivery.headers["webhook-id"], id.as_str());
            let secret = endpoint["secret"].as_str().unwrap();
            let expected = signature(secret, &id, &delivery);
            assert_eq!(
                delivery.headers["webhook-signature"],
                expected.as_str(),
                "signed with its own endpoint's secret"
            );
            got.push(envelope["data"]["n"].as_i64().unwrap());
        }
        got.sort_unstable();
        let expected: Vec<i64> = (0..12).filter(|n| n % 3 == residue).collect();
        assert_eq!(got, expected, "every message of its tenant and types, once");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!accrued.has_more() && !paid.has_more() && !beta_all.has_more());
    std::sync::Arc::into_inner(srv).unwrap().stop().await;
}
