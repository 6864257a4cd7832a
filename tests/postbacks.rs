//! Partner postbacks: templates checked, every macro filled in, retries with stored delays,
//! auto-disable after consecutive failures, counters on the postback and on `/metrics`.

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    every_macro_is_filled_in,
    templates_and_types_are_checked_and_owned,
    a_failing_tracker_is_retried_then_the_postback_disabled,
    each_postback_retry_waits_its_stored_delay,
);

/// A partner with a postback to `template` on a flat-commission campaign, and a click on its
/// link; returns (partner id, click id).
async fn tracked(srv: &TestServer, template: &str) -> (String, String) {
    let campaign = srv
        .campaign(json!({"commission": {"type": "flat", "amount": 1234, "currency": "USD"}}))
        .await;
    let partner = srv.partner("tracked@example.com").await;
    let pid = partner["id"].as_str().unwrap().to_owned();
    let (status, postback) = srv
        .post(
            &format!("/v1/partners/{pid}/postbacks"),
            &srv.admin_key,
            json!({"url_template": template, "event_types": ["commission.accrued"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{postback}");
    let (_, link) = srv
        .post(
            &format!("/v1/partners/{pid}/links"),
            &srv.admin_key,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    let (_, location) = srv
        .click(&format!("/r/{}", link["key"].as_str().unwrap()), &[])
        .await;
    let click_id = url::Url::parse(&location.unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "click_id")
        .unwrap()
        .1
        .into_owned();
    (pid, click_id)
}

async fn convert(srv: &TestServer, event_id: &str, click_id: &str) -> Value {
    let (status, result) = srv
        .post(
            "/v1/events",
            &srv.admin_key,
            json!({"event_id": event_id, "type": "lead_qualified", "click_id": click_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{result}");
    result
}

async fn every_macro_is_filled_in(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut tracker = Receiver::start().await;
    let template = format!(
        "{}/{{partner_id}}?c={{click_id}}&p={{partner_id}}&com={{commission_id}}&a={{commission_amount}}&cur={{currency}}&e={{event_id}}&t={{transaction_id}}&ty={{event_type}}&cmp={{campaign_id}}&po={{payout_id}}&x={{unknown}}",
        tracker.url
    );
    let (partner, click_id) = tracked(&srv, &template).await;
    let result = convert(&srv, "lead+1 ü", &click_id).await;
    let commission_id = result["commission_id"].as_str().unwrap();
    let (_, commission) = srv
        .get(&format!("/v1/commissions/{commission_id}"), &srv.admin_key)
        .await;
    let received = tracker.next().await;
    let expected = format!(
        "/hook/{partner}?c={click_id}&p={partner}&com={commission_id}&a=12.34&cur=USD&e=lead%2B1%20%C3%BC&t={}&ty=commission.accrued&cmp={}&po=&x={{unknown}}",
        commission["transaction_id"].as_str().unwrap(),
        commission["campaign_id"].as_str().unwrap(),
    );
    assert_eq!(received.uri.to_string(), expected);
    assert_eq!(received.method, reqwest::Method::GET);
    assert!(
        received.headers.get("webhook-signature").is_none(),
        "postbacks are unsigned"
    );
    srv.stop().await;
}

async fn templates_and_types_are_checked_and_owned(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let own = srv.partner("own@example.com").await;
    let other = srv.partner("other@example.com").await;
    let own_path = format!("/v1/partners/{}/postbacks", own["id"].as_str().unwrap());
    for bad in [
        "ftp://tracker.example/{click_id}",
        "{click_id}",
        "http//tracker.example/{click_id}",
        "mailto:t@example.com?c={click_id}",
    ] {
        let refused = srv
            .post(&own_path, &srv.admin_key, json!({"url_template": bad}))
            .await;
        assert_problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let wrong_type = srv
        .post(
            &own_path,
            &srv.admin_key,
            json!({"url_template": "https://t.example/?c={click_id}", "event_types": ["partner.created"]}),
        )
        .await;
    assert_problem(
        &wrong_type,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let (_, key) = srv
        .mint(json!({"name": "p", "kind": "partner", "partner_id": own["id"]}))
        .await;
    let (status, created) = srv
        .post(
            &own_path,
            &key,
            json!({"url_template": "https://t.example/?c={click_id}"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["event_types"], json!([]), "every commission.* type");
    let pid = created["id"].as_str().unwrap();
    let (status, edited) = srv
        .patch(
            &format!("{own_path}/{pid}"),
            &key,
            json!({"event_types": ["commission.reversed", "commission.accrued"], "enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(
        edited["event_types"],
        json!(["commission.accrued", "commission.reversed"])
    );
    assert_eq!(edited["enabled"], false);

    let other_path = format!("/v1/partners/{}/postbacks", other["id"].as_str().unwrap());
    let refused = srv
        .post(
            &other_path,
            &key,
            json!({"url_template": "https://t.example/"}),
        )
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_partner");
    let not_theirs = srv
        .delete(&format!("{other_path}/{pid}"), &srv.admin_key)
        .await;
    assert_problem(&not_theirs, StatusCode::NOT_FOUND, "postback_not_found");

    let (status, _) = srv.delete(&format!("{own_path}/{pid}"), &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = srv.get(&own_path, &key).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    srv.stop().await;
}

/// The partner's only postback, once `ready` holds for it.
async fn postback_when(srv: &TestServer, partner: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (_, list) = srv
            .get(&format!("/v1/partners/{partner}/postbacks"), &srv.admin_key)
            .await;
        if ready(&list["data"][0]) {
            return list["data"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the postback never reached the expected state");
}

async fn a_failing_tracker_is_retried_then_the_postback_disabled(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--postback-disable-after", "2"]).await;
    let mut tracker = Receiver::start().await;
    tracker.answer(500, vec![]);
    tracker.answer(503, vec![]);
    let (partner, click_id) = tracked(&srv, &format!("{}?c={{click_id}}", tracker.url)).await;
    convert(&srv, "lead-1", &click_id).await;

    let first = tracker.next().await;
    let failed_once = postback_when(&srv, &partner, |p| p["failure_count"] == 1).await;
    assert_eq!(failed_once["last_status"], 500);
    assert_eq!(failed_once["enabled"], true);

    // The retry waits its stored delay (30 s, ±20%): move the clock instead of sleeping. The
    // worker records the retry just after the counters, so move it until the retry is due.
    let mut second = None;
    for _ in 0..20 {
        srv.clock.advance(Duration::from_secs(40));
        second = tracker.next_within(Duration::from_millis(500)).await;
        if second.is_some() {
            break;
        }
    }
    let second = second.expect("the retry arrives");
    assert_eq!(first.uri, second.uri, "a retry sends the same URL");
    let disabled = postback_when(&srv, &partner, |p| p["enabled"] == false).await;
    assert_eq!(disabled["failure_count"], 2);
    assert_eq!(disabled["consecutive_failures"], 2);
    assert_eq!(disabled["last_status"], 503);
    assert_eq!(disabled["disabled_reason"], "2 consecutive failures");

    // A disabled postback fires no more.
    let click_again = click_id.clone();
    convert(&srv, "lead-2", &click_again).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!tracker.has_more());

    let metrics = srv.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_postback_failures{") && l.contains(&partner))
        .unwrap_or_else(|| panic!("no postback failures on /metrics:\n{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    srv.stop().await;
}

/// The fire job's (attempt, state, run_at), once it has recorded attempt `attempt`.
async fn fire_after(srv: &TestServer, attempt: i64) -> (i64, String, i64) {
    for _ in 0..200 {
        let db = srv.inspect().await;
        let row: Option<(i64, String, i64)> =
            sqlx::query_as("SELECT attempt, state, run_at FROM jobs WHERE kind = 'postbacks.fire'")
                .fetch_optional(db.pool())
                .await
                .unwrap();
        db.close().await;
        if let Some(row) = row.filter(|(a, state, _)| *a == attempt && state != "running") {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("attempt {attempt} was never recorded");
}

async fn each_postback_retry_waits_its_stored_delay(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--postback-disable-after", "10"]).await;
    let mut tracker = Receiver::start().await;
    for _ in 0..5 {
        tracker.answer(500, vec![]);
    }
    let (_, click_id) = tracked(&srv, &format!("{}?c={{click_id}}", tracker.url)).await;
    convert(&srv, "lead-1", &click_id).await;
    tracker.next().await;
    // After each failure the next attempt is stored 30 s, 2 min, 10 min and 1 h later (±20%);
    // moving the clock to it brings the next attempt.
    for (attempt, delay) in [(1, 30_i64), (2, 120), (3, 600), (4, 3600)] {
        let (_, state, run_at) = fire_after(&srv, attempt).await;
        assert_eq!(state, "available", "attempt {attempt}");
        let wait = run_at - srv.clock.now_ms();
        let (low, high) = (delay * 800, delay * 1200);
        assert!(
            (low - 1000..=high).contains(&wait),
            "after attempt {attempt}: retry in {wait} ms, expected {delay} s ±20%"
        );
        srv.clock
            .advance(Duration::from_millis(wait.max(0) as u64 + 10));
        tracker.next().await;
    }
    // The fifth attempt was the last: the fire is counted failed, not retried.
    let (_, state, _) = fire_after(&srv, 5).await;
    assert_eq!(state, "dead");
    srv.stop().await;
}
