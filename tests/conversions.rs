//! Conversion events in: the CRM-to-subscriber story end to end, dedupe, windows, models,
//! revoked partners, renewals, holdback maturity, refunds and batches.

mod common;

use std::time::Duration;

use common::receiver::{verify_with_reference_library, Receiver};
use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    an_opportunity_won_in_the_crm_pays_the_partner_whose_link_was_clicked,
    an_event_id_counts_once_and_cannot_be_reused,
    a_click_just_outside_the_window_is_not_attributed,
    the_campaign_model_picks_the_first_or_last_click,
    clicks_of_revoked_partners_are_never_attributed,
    renewals_earn_only_on_recurring_campaigns,
    commissions_are_approved_once_the_holdback_has_passed,
    a_refund_of_a_paid_commission_is_recorded_not_clawed_back,
    one_bad_event_does_not_sink_its_batch,
    a_conversion_waits_for_its_click_to_be_written,
    a_click_made_before_a_revoke_still_counts_when_its_write_was_held_up,
    money_is_bounded_and_a_huge_amount_never_wraps,
    a_partial_refund_takes_back_the_refunded_share,
    a_refund_reverses_an_approved_commission,
    a_batch_takes_at_most_500_events,
    campaign_dates_govern_earning,
    an_event_accrues_at_the_partners_snapshot_or_its_amendment,
);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A partner with a link to a new campaign made with `campaign` fields; returns
/// (campaign id, partner id, link key).
async fn program(srv: &TestServer, email: &str, campaign: Value) -> (String, String, String) {
    let campaign = srv.campaign(campaign).await;
    let partner = srv.partner(email).await;
    let (status, link) = srv
        .post(
            &format!("/v1/partners/{}/links", partner["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"campaign_id": campaign["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    (
        campaign["id"].as_str().unwrap().to_owned(),
        partner["id"].as_str().unwrap().to_owned(),
        link["key"].as_str().unwrap().to_owned(),
    )
}

/// Follows the link; returns the click id the destination received.
async fn click(srv: &TestServer, key: &str) -> String {
    let (status, location) = srv.click(&format!("/r/{key}"), &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    url::Url::parse(&location.unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "click_id")
        .unwrap()
        .1
        .into_owned()
}

async fn event(srv: &TestServer, body: Value) -> (StatusCode, Value) {
    srv.post("/v1/events", &srv.admin_key, body).await
}

async fn commission(srv: &TestServer, id: &str) -> Value {
    let (status, commission) = srv
        .get(&format!("/v1/commissions/{id}"), &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{commission}");
    commission
}

async fn an_opportunity_won_in_the_crm_pays_the_partner_whose_link_was_clicked(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut zapier = Receiver::start().await;
    let (_, subscription) = srv
        .post(
            "/v1/webhooks",
            &srv.admin_key,
            json!({"url": zapier.url, "event_types": ["commission.accrued", "commission.reversed"]}),
        )
        .await;
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    let (campaign, partner, key) = program(&srv, "ada@partners.example", json!({})).await;
    // The partner's ad tracker wants a postback; the partner sets it up with its own key.
    let mut tracker = Receiver::start().await;
    let (_, partner_key) = srv
        .mint(json!({"name": "portal", "kind": "partner", "partner_id": partner}))
        .await;
    let (status, postback) = srv
        .post(
            &format!("/v1/partners/{partner}/postbacks"),
            &partner_key,
            json!({"url_template": format!(
                "{}?cid={{click_id}}&payout={{commission_amount}}&cur={{currency}}&tx={{transaction_id}}&ev={{event_type}}&deal={{event_id}}&typo={{clickid}}",
                tracker.url
            )}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{postback}");
    let click_id = click(&srv, &key).await;

    // The customer signs up: the backend stitches the click to what it knows about them.
    let backend = srv
        .mint(json!({"name": "backend", "scopes": ["events:write"]}))
        .await
        .1;
    let (status, bound) = srv
        .post(
            "/v1/identities",
            &backend,
            json!({"click_id": click_id, "identities": {"email": "Buyer@Example.com", "crm_contact_id": "hs-77"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");

    // The CRM closes the deal, knowing only the e-mail. (The clock stays put: the reference
    // library refuses signatures whose timestamp is more than five minutes from its own clock.)
    let crm = srv
        .mint(json!({"name": "HubSpot", "scopes": ["events:write"]}))
        .await
        .1;
    let (status, result) = srv
        .post(
            "/v1/events",
            &crm,
            json!({"event_id": "deal 4711/won", "type": "opportunity_won", "amount": 199_900,
                   "currency": "eur", "order_id": "order-4711",
                   "identities": {"email": "buyer@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{result}");
    assert_eq!(result["customer_id"], bound["customer_id"]);
    assert_eq!(result["attribution"]["click_id"], click_id.as_str());
    assert_eq!(result["attribution"]["partner_id"], partner.as_str());
    let commission_id = result["commission_id"].as_str().unwrap().to_owned();
    let accrued = commission(&srv, &commission_id).await;
    assert_eq!(accrued["amount"], 29_985, "15% of 1,999.00 EUR");
    assert_eq!(accrued["currency"], "EUR");
    assert_eq!(accrued["status"], "pending");
    assert_eq!(accrued["campaign_id"], campaign.as_str());

    let received = zapier.next().await;
    assert!(verify_with_reference_library(&secret, &received) || !reference_required());
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(body["type"], "commission.accrued");
    assert_eq!(body["data"]["commission_id"], commission_id.as_str());
    assert_eq!(body["data"]["amount"], 29_985);
    assert_eq!(body["data"]["click_id"], click_id.as_str());
    assert_eq!(body["data"]["transaction_id"], accrued["transaction_id"]);

    // The tracker gets its GET with every macro filled in and encoded, the typo left alone.
    let pinged = tracker.next().await;
    assert_eq!(pinged.method, reqwest::Method::GET);
    let tx = accrued["transaction_id"].as_str().unwrap();
    assert_eq!(
        pinged.uri.to_string(),
        format!(
            "/hook?cid={click_id}&payout=299.85&cur=EUR&tx={tx}&ev=commission.accrued&deal=deal%204711%2Fwon&typo={{clickid}}"
        )
    );

    // The customer gets a refund: the pending commission is reversed and the subscriber hears it.
    let (status, refund) = srv
        .post(
            "/v1/events",
            &crm,
            json!({"event_id": "refund-4711", "type": "refund", "order_id": "order-4711",
                   "amount": 199_900, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{refund}");
    assert_eq!(refund["reversed_commission_ids"], json!([commission_id]));
    assert_eq!(
        refund["attribution"],
        Value::Null,
        "a refund is never attributed"
    );
    assert_eq!(commission(&srv, &commission_id).await["status"], "reversed");
    let received = zapier.next().await;
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(body["type"], "commission.reversed");
    assert_eq!(body["data"]["commission_id"], commission_id.as_str());
    let pinged = tracker.next().await;
    assert!(
        pinged
            .uri
            .to_string()
            .contains(&format!("tx={tx}&ev=commission.reversed")),
        "the same transaction id, so the tracker can match it: {}",
        pinged.uri
    );
    // The counters are written once the tracker's answer is in.
    let mut postbacks = Value::Null;
    for _ in 0..50 {
        postbacks = srv
            .get(&format!("/v1/partners/{partner}/postbacks"), &partner_key)
            .await
            .1;
        if postbacks["data"][0]["success_count"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(postbacks["data"][0]["success_count"], 2, "{postbacks}");
    assert_eq!(postbacks["data"][0]["last_status"], 200);

    let (_, listed) = srv
        .get(
            &format!("/v1/partners/{partner}/commissions?status=reversed"),
            &srv.admin_key,
        )
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let types: Vec<String> = srv.messages().await.into_iter().map(|(t, _)| t).collect();
    assert!(
        types.contains(&"attribution.created".to_owned()),
        "{types:?}"
    );
    srv.stop().await;
}

fn reference_required() -> bool {
    std::env::var("SWITCHYARD_TEST_REFERENCE_VERIFIER").is_ok()
}

async fn an_event_id_counts_once_and_cannot_be_reused(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(&srv, "p@example.com", json!({})).await;
    let click_id = click(&srv, &key).await;
    let body = json!({"event_id": "evt-1", "type": "purchase", "click_id": click_id,
                      "amount": 1000, "currency": "EUR"});
    let (status, first) = event(&srv, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The same body again, keys in another order: the first answer, nothing new.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"currency": "EUR", "amount": 1000, "click_id": "{click_id}", "type": "purchase", "event_id": "evt-1"}}"#
    ))
    .unwrap();
    let (status, again) = event(&srv, reordered).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    let (_, all) = srv.get("/v1/commissions", &srv.admin_key).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);

    let mut changed = body.clone();
    changed["amount"] = json!(2000);
    let conflict = event(&srv, changed).await;
    assert_problem(&conflict, StatusCode::CONFLICT, "event_id_conflict");
    srv.stop().await;
}

async fn a_click_just_outside_the_window_is_not_attributed(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(&srv, "p@example.com", json!({"attribution_window_days": 7})).await;
    let inside = click(&srv, &key).await;
    srv.clock.advance(7 * DAY - Duration::from_secs(60));
    let (_, kept) = event(
        &srv,
        json!({"event_id": "in", "type": "signup", "click_id": inside}),
    )
    .await;
    assert_eq!(kept["attribution"]["click_id"], inside.as_str(), "{kept}");

    let outside = click(&srv, &key).await;
    srv.clock.advance(7 * DAY + Duration::from_secs(1));
    let (status, missed) = event(
        &srv,
        json!({"event_id": "out", "type": "signup", "click_id": outside}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{missed}");
    assert_eq!(missed["attribution"], Value::Null, "{missed}");
    assert_eq!(missed["commission_id"], Value::Null);
    srv.stop().await;
}

/// Two clicks of one customer on two links of the campaign; returns the click ids in order.
async fn two_clicks(srv: &TestServer, model: &str) -> (String, String, String) {
    let (campaign, _, first_key) = program(
        srv,
        &format!("first-{model}@example.com"),
        json!({"attribution_model": model}),
    )
    .await;
    let second = srv.partner(&format!("second-{model}@example.com")).await;
    let (_, link) = srv
        .post(
            &format!("/v1/partners/{}/links", second["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"campaign_id": campaign}),
        )
        .await;
    let first = click(srv, &first_key).await;
    srv.clock.advance(DAY);
    let last = click(srv, link["key"].as_str().unwrap()).await;
    for (click_id, n) in [(&first, 1), (&last, 2)] {
        let (status, _) = srv
            .post(
                "/v1/identities",
                &srv.admin_key,
                json!({"click_id": click_id, "identities": {"user_id": format!("{model}-user")}}),
            )
            .await;
        assert!(status.is_success(), "binding click {n}");
    }
    (campaign, first, last)
}

async fn the_campaign_model_picks_the_first_or_last_click(engine: Engine) {
    let srv = TestServer::start(engine).await;
    for (model, expect_first) in [("last_click", false), ("first_click", true)] {
        let (_, first, last) = two_clicks(&srv, model).await;
        srv.clock.advance(DAY);
        let (status, result) = event(
            &srv,
            json!({"event_id": format!("buy-{model}"), "type": "purchase", "amount": 5000,
                   "currency": "EUR", "identities": {"user_id": format!("{model}-user")}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{result}");
        let expected = if expect_first { &first } else { &last };
        assert_eq!(
            result["attribution"]["click_id"],
            expected.as_str(),
            "{model}"
        );
    }
    srv.stop().await;
}

async fn clicks_of_revoked_partners_are_never_attributed(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, partner, key) = program(&srv, "p@example.com", json!({})).await;
    let before = click(&srv, &key).await;
    srv.post(
        &format!("/v1/partners/{partner}/revoke"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let during = click(&srv, &key).await;
    for (n, click_id) in [&before, &during].into_iter().enumerate() {
        let (status, result) = event(
            &srv,
            json!({"event_id": format!("e{n}"), "type": "purchase", "click_id": click_id,
                   "amount": 100, "currency": "EUR"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(result["attribution"], Value::Null, "{result}");
    }
    // Reinstated, its earlier clicks count again, but the click made while revoked never does.
    srv.post(
        &format!("/v1/partners/{partner}/reinstate"),
        &srv.admin_key,
        json!({}),
    )
    .await;
    let (_, again) = event(
        &srv,
        json!({"event_id": "e-before", "type": "signup", "click_id": before}),
    )
    .await;
    assert_eq!(again["attribution"]["click_id"], before.as_str());
    let (_, flagged) = event(
        &srv,
        json!({"event_id": "e-during", "type": "signup", "click_id": during}),
    )
    .await;
    assert_eq!(flagged["attribution"], Value::Null);
    srv.stop().await;
}

async fn renewals_earn_only_on_recurring_campaigns(engine: Engine) {
    let srv = TestServer::start(engine).await;
    for (recurring, earns) in [(false, false), (true, true)] {
        let (_, _, key) = program(
            &srv,
            &format!("p{recurring}@example.com"),
            json!({"recurring": recurring}),
        )
        .await;
        let click_id = click(&srv, &key).await;
        let (_, renewal) = event(
            &srv,
            json!({"event_id": format!("renew-{recurring}"), "type": "renewal",
                   "click_id": click_id, "amount": 1000, "currency": "EUR"}),
        )
        .await;
        assert!(renewal["attribution"].is_object(), "{renewal}");
        assert_eq!(renewal["commission_id"].is_string(), earns, "{renewal}");
    }
    srv.stop().await;
}

async fn commissions_are_approved_once_the_holdback_has_passed(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let mut subscriber = Receiver::start().await;
    srv.post(
        "/v1/webhooks",
        &srv.admin_key,
        json!({"url": subscriber.url, "event_types": ["commission.approved"]}),
    )
    .await;
    let (_, _, key) = program(
        &srv,
        "p@example.com",
        json!({"holdback_days": 14, "commission": {"type": "flat", "amount": 2500, "currency": "GBP"}}),
    )
    .await;
    let click_id = click(&srv, &key).await;
    let (_, result) = event(
        &srv,
        json!({"event_id": "lead-1", "type": "lead_qualified", "click_id": click_id}),
    )
    .await;
    let id = result["commission_id"].as_str().unwrap().to_owned();
    assert_eq!(commission(&srv, &id).await["amount"], 2500);

    srv.clock.advance(13 * DAY);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        commission(&srv, &id).await["status"],
        "pending",
        "still held back"
    );

    srv.clock.advance(DAY + Duration::from_secs(60));
    let approved = subscriber.next().await;
    let body: Value = serde_json::from_slice(&approved.body).unwrap();
    assert_eq!(body["type"], "commission.approved");
    assert_eq!(body["data"]["commission_id"], id.as_str());
    let now = commission(&srv, &id).await;
    assert_eq!(now["status"], "approved");
    assert!(now["approved_at"].is_string());
    srv.stop().await;
}

async fn a_refund_of_a_paid_commission_is_recorded_not_clawed_back(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(&srv, "p@example.com", json!({})).await;
    let click_id = click(&srv, &key).await;
    let (_, result) = event(
        &srv,
        json!({"event_id": "buy", "type": "purchase", "click_id": click_id, "order_id": "o-1",
               "amount": 10_000, "currency": "EUR"}),
    )
    .await;
    let id = result["commission_id"].as_str().unwrap().to_owned();
    // Payouts are not built yet: mark it paid as a payout run will.
    let db = srv.inspect().await;
    sqlx::query("UPDATE commissions SET status = 'paid' WHERE id = $1")
        .bind(&id)
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let (status, refund) = event(
        &srv,
        json!({"event_id": "refund", "type": "refund", "order_id": "o-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{refund}");
    assert_eq!(refund["reversed_commission_ids"], json!([]));
    assert_eq!(refund["refunded_paid_commission_ids"], json!([id]));
    let paid = commission(&srv, &id).await;
    assert_eq!(paid["status"], "paid");
    assert!(paid["refunded_at"].is_string());
    srv.stop().await;
}

async fn one_bad_event_does_not_sink_its_batch(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(&srv, "p@example.com", json!({})).await;
    let click_id = click(&srv, &key).await;
    let (status, batch) = srv
        .post(
            "/v1/events/batch",
            &srv.admin_key,
            json!({"events": [
                {"event_id": "b1", "type": "purchase", "click_id": click_id, "amount": 1000, "currency": "EUR"},
                {"event_id": "b2", "type": "teleport"},
                {"event_id": "b3", "type": "signup", "amount": 5},
                {"type": "signup"},
                {"event_id": "b1", "type": "purchase", "click_id": click_id, "amount": 1000, "currency": "EUR"},
                {"event_id": "b6", "type": "custom.demo_booked", "click_id": click_id},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let results = batch["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 422, 422, 200, 201], "{batch}");
    assert_eq!(results[1]["problem"]["errors"][0]["field"], "type");
    assert_eq!(results[2]["problem"]["errors"][0]["field"], "currency");
    assert_eq!(results[3]["problem"]["code"], "invalid_body");
    assert!(results[0]["result"]["commission_id"].is_string());

    let empty = srv
        .post("/v1/events/batch", &srv.admin_key, json!({"events": []}))
        .await;
    assert_problem(
        &empty,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    srv.stop().await;
}

/// The router answers a click before writing it. An event naming that click, arriving while the
/// write is held up (another connection locks `clicks`), waits for it and is attributed. (On
/// SQLite the event's own write waits for the lock anyway; on PostgreSQL only the wait for the
/// router's buffer keeps the event from missing the click.)
async fn a_conversion_waits_for_its_click_to_be_written(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, partner_id, key) = program(&srv, "p@example.com", json!({})).await;
    let (holder, lock) = srv.lock_table("clicks").await;
    let click_id = click(&srv, &key).await;
    let body = json!({"event_id": "evt-1", "type": "purchase", "click_id": click_id,
                      "amount": 1000, "currency": "EUR"});
    let converted = async {
        let answer = event(&srv, body).await;
        (answer, std::time::Instant::now())
    };
    let (((status, result), answered_at), released_at) =
        tokio::join!(converted, release_after(lock, Duration::from_millis(300)));
    assert_eq!(status, StatusCode::CREATED, "{result}");
    assert!(answered_at >= released_at, "the event waited for the click");
    assert_eq!(
        result["attribution"]["click_id"],
        click_id.as_str(),
        "{result}"
    );
    assert_eq!(result["attribution"]["partner_id"], partner_id.as_str());
    holder.close().await;
    srv.stop().await;
}

/// A click answered while its partner was active is stored as not revoked, even when its write
/// is held up (another connection locks `clicks`) until after a revoke was requested: the
/// revoke waits for the router's buffer first. (On PostgreSQL, without that wait, the revoke
/// commits first and the click is stored flagged, never to be attributed.)
async fn a_click_made_before_a_revoke_still_counts_when_its_write_was_held_up(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, partner, key) = program(&srv, "p@example.com", json!({})).await;
    let (holder, lock) = srv.lock_table("clicks").await;
    let before = click(&srv, &key).await;
    let revoke = format!("/v1/partners/{partner}/revoke");
    let revoked = srv.post(&revoke, &srv.admin_key, json!({}));
    let ((status, _), _) = tokio::join!(revoked, release_after(lock, Duration::from_millis(300)));
    assert_eq!(status, StatusCode::OK);
    let (status, _) = srv
        .post(
            &format!("/v1/partners/{partner}/reinstate"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, result) = event(
        &srv,
        json!({"event_id": "e-before", "type": "signup", "click_id": before}),
    )
    .await;
    assert_eq!(
        result["attribution"]["click_id"],
        before.as_str(),
        "{result}"
    );
    holder.close().await;
    srv.stop().await;
}

/// Releases a lock from [`TestServer::lock_table`] after `delay`; returns when it did.
async fn release_after(
    lock: sqlx::Transaction<'static, sqlx::Any>,
    delay: Duration,
) -> std::time::Instant {
    tokio::time::sleep(delay).await;
    lock.rollback().await.unwrap();
    std::time::Instant::now()
}

/// Amounts above 10^15 minor units are refused, and the largest one earns its exact percentage
/// (an amount near 2^63 once wrapped to a commission of 150.00).
async fn money_is_bounded_and_a_huge_amount_never_wraps(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(
        &srv,
        "p@example.com",
        json!({"commission": {"type": "percent", "bps": 1500}}),
    )
    .await;
    let click_id = click(&srv, &key).await;
    for amount in [3_074_457_345_618_358_602_i64, 1_000_000_000_000_001, -1] {
        let refused = event(
            &srv,
            json!({"event_id": format!("e{amount}"), "type": "purchase", "click_id": click_id,
                   "amount": amount, "currency": "EUR"}),
        )
        .await;
        let problem = assert_problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(problem["errors"][0]["field"], "amount", "{problem}");
    }
    let (status, largest) = event(
        &srv,
        json!({"event_id": "largest", "type": "purchase", "click_id": click_id,
               "amount": 1_000_000_000_000_000_i64, "currency": "EUR"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{largest}");
    let commission = commission(&srv, largest["commission_id"].as_str().unwrap()).await;
    assert_eq!(commission["amount"], 150_000_000_000_000_i64);

    let flat = srv
        .post(
            "/v1/campaigns",
            &srv.admin_key,
            json!({"name": "Huge", "destination_url": "https://shop.example.com",
                   "commission": {"type": "flat", "amount": 1_000_000_000_000_001_i64, "currency": "EUR"}}),
        )
        .await;
    let problem = assert_problem(&flat, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        problem["errors"][0]["field"], "commission.amount",
        "{problem}"
    );
    srv.stop().await;
}

/// A refund for less than the order takes the refunded share of its commissions back, rounded
/// half up and recomputed from every refund so far; refunds adding up to the whole reverse.
async fn a_partial_refund_takes_back_the_refunded_share(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(&srv, "p@example.com", json!({})).await;
    let click_id = click(&srv, &key).await;
    let (status, bought) = event(
        &srv,
        json!({"event_id": "buy", "type": "purchase", "click_id": click_id,
               "amount": 1999, "currency": "EUR", "order_id": "o-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    let id = bought["commission_id"].as_str().unwrap().to_owned();
    assert_eq!(commission(&srv, &id).await["amount"], 300); // 15% of 19.99

    let refund = |n: u32, amount: i64| {
        json!({"event_id": format!("r{n}"), "type": "refund", "order_id": "o-1",
               "amount": amount, "currency": "EUR"})
    };
    let (status, first) = event(&srv, refund(1, 500)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["adjusted_commission_ids"], json!([id]));
    assert_eq!(first["reversed_commission_ids"], json!([]));
    let partly = commission(&srv, &id).await;
    // 300 * 500 / 1999 = 75.04
    assert_eq!(
        (
            partly["status"].as_str(),
            partly["reversed_amount"].as_i64()
        ),
        (Some("pending"), Some(75))
    );
    let (_, second) = event(&srv, refund(2, 1000)).await;
    assert_eq!(second["adjusted_commission_ids"], json!([id]));
    // 300 * 1500 / 1999 = 225.11
    assert_eq!(commission(&srv, &id).await["reversed_amount"], 225);
    let (_, last) = event(&srv, refund(3, 499)).await;
    assert_eq!(last["reversed_commission_ids"], json!([id]));
    assert_eq!(commission(&srv, &id).await["status"], "reversed");
    let types: Vec<String> = srv.messages().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types.iter().filter(|t| *t == "commission.adjusted").count(),
        2
    );
    assert_eq!(
        types.iter().filter(|t| *t == "commission.reversed").count(),
        1
    );
    srv.stop().await;
}

async fn a_refund_reverses_an_approved_commission(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (_, _, key) = program(&srv, "p@example.com", json!({"holdback_days": 1})).await;
    let click_id = click(&srv, &key).await;
    let (_, bought) = event(
        &srv,
        json!({"event_id": "buy", "type": "purchase", "click_id": click_id,
               "amount": 1000, "currency": "EUR", "order_id": "o-9"}),
    )
    .await;
    let id = bought["commission_id"].as_str().unwrap().to_owned();
    srv.clock.advance(DAY + Duration::from_secs(1));
    let state = &srv.running.as_ref().unwrap().state;
    switchyard::commissions::approve_matured(state)
        .await
        .unwrap();
    assert_eq!(commission(&srv, &id).await["status"], "approved");

    let (status, refunded) = event(
        &srv,
        json!({"event_id": "refund", "type": "refund", "order_id": "o-9"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{refunded}");
    assert_eq!(refunded["reversed_commission_ids"], json!([id]));
    let reversed = commission(&srv, &id).await;
    assert_eq!(reversed["status"], "reversed");
    assert!(reversed["reversed_at"].is_string());
    srv.stop().await;
}

async fn a_batch_takes_at_most_500_events(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let events = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"event_id": format!("b{n}-{i}"), "type": "signup"}))
            .collect()
    };
    let (status, full) = srv
        .post(
            "/v1/events/batch",
            &srv.admin_key,
            json!({"events": events(500)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["results"].as_array().unwrap().len(), 500);
    let over = srv
        .post(
            "/v1/events/batch",
            &srv.admin_key,
            json!({"events": events(501)}),
        )
        .await;
    let problem = assert_problem(&over, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "events");
    let db = srv.inspect().await;
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM conversions")
        .fetch_one(db.pool())
        .await
        .unwrap();
    db.close().await;
    assert_eq!(stored, 500, "the refused batch stored nothing");
    srv.stop().await;
}

/// A purchase of 10,000 EUR minor units through `click` at the server's now (or `at`).
async fn purchase(srv: &TestServer, id: &str, click: &str, at: Option<String>) -> Value {
    let mut body = json!({"event_id": id, "type": "purchase", "click_id": click,
                          "amount": 10_000, "currency": "EUR"});
    if let Some(at) = at {
        body["occurred_at"] = json!(at);
    }
    let (status, converted) = event(srv, body).await;
    assert_eq!(status, StatusCode::CREATED, "{converted}");
    assert!(
        converted["attribution"].is_object(),
        "attributed: {converted}"
    );
    converted
}

async fn campaign_dates_govern_earning(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (campaign, _, key) = program(&srv, "ends@example.com", json!({})).await;
    let clicked = click(&srv, &key).await;
    srv.clock.advance(Duration::from_secs(3600));
    let before_end = switchyard::clock::rfc3339(srv.clock.now_ms());
    srv.clock.advance(Duration::from_secs(3600));
    let (status, ended) = srv
        .post(
            &format!("/v1/campaigns/{campaign}/end"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    srv.clock.advance(Duration::from_secs(60));

    // After the end: attributed (and said why), no commission; the link still redirects.
    let late = purchase(&srv, "late", &clicked, None).await;
    assert_eq!(late["commission_id"], Value::Null, "{late}");
    assert_eq!(late["no_commission_reason"], "campaign_ended");
    let (status, _) = srv.click(&format!("/r/{key}"), &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    // A conversion that happened before the end still earns.
    let earlier = purchase(&srv, "earlier", &clicked, Some(before_end)).await;
    assert!(earlier["commission_id"].is_string(), "{earlier}");
    assert_eq!(earlier["no_commission_reason"], Value::Null);
    // Moving the end into the future makes it earn again.
    let future = switchyard::clock::rfc3339(srv.clock.now_ms() + 30 * 24 * 3600 * 1000);
    let (status, reopened) = srv
        .patch(
            &format!("/v1/campaigns/{campaign}"),
            &srv.admin_key,
            json!({"ends_at": future}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reopened}");
    assert_eq!(reopened["status"], "active");
    let again = purchase(&srv, "again", &clicked, None).await;
    assert!(again["commission_id"].is_string(), "{again}");

    // A scheduled campaign: clicks count, but conversions before its start earn nothing.
    let start = switchyard::clock::rfc3339(srv.clock.now_ms() + 24 * 3600 * 1000);
    let (_, _, key) = program(&srv, "starts@example.com", json!({"starts_at": start})).await;
    let early_click = click(&srv, &key).await;
    let early = purchase(&srv, "early", &early_click, None).await;
    assert_eq!(early["commission_id"], Value::Null);
    assert_eq!(early["no_commission_reason"], "campaign_not_started");
    srv.clock.advance(2 * DAY);
    let started = purchase(&srv, "started", &early_click, None).await;
    assert!(started["commission_id"].is_string(), "{started}");
    srv.stop().await;
}

async fn an_event_accrues_at_the_partners_snapshot_or_its_amendment(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (campaign, partner, key) = program(
        &srv,
        "early@example.com",
        json!({"commission": {"type": "percent", "bps": 1000}}),
    )
    .await;
    // The campaign's terms change after the partner joined: the partner keeps its snapshot.
    let (status, _) = srv
        .patch(
            &format!("/v1/campaigns/{campaign}"),
            &srv.admin_key,
            json!({"commission": {"type": "percent", "bps": 2500}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = click(&srv, &key).await;
    let kept = purchase(&srv, "kept", &first, None).await;
    let kept = commission(&srv, kept["commission_id"].as_str().unwrap()).await;
    assert_eq!(kept["amount"], 1000, "10% of 10,000: the snapshot");
    // A partner joining now gets the new terms.
    let late = srv.partner("late@example.com").await;
    let (_, link) = srv
        .post(
            &format!("/v1/partners/{}/links", late["id"].as_str().unwrap()),
            &srv.admin_key,
            json!({"campaign_id": campaign}),
        )
        .await;
    let late_click = click(&srv, link["key"].as_str().unwrap()).await;
    let new_terms = purchase(&srv, "new-terms", &late_click, None).await;
    let new_terms = commission(&srv, new_terms["commission_id"].as_str().unwrap()).await;
    assert_eq!(new_terms["amount"], 2500);
    // An admin's amendment overrides both.
    let (status, _) = srv
        .put(
            &format!("/v1/partners/{partner}/commission-terms"),
            &srv.admin_key,
            json!({"type": "flat", "amount": 700, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = click(&srv, &key).await;
    let amended = purchase(&srv, "amended", &second, None).await;
    let amended = commission(&srv, amended["commission_id"].as_str().unwrap()).await;
    assert_eq!(
        (amended["amount"].as_i64(), amended["currency"].as_str()),
        (Some(700), Some("EUR"))
    );
    srv.stop().await;
}
