//! Stripe in: pointing Stripe at the hub is the whole integration. Events are signed by Stripe's
//! own library; what each becomes is read back through the API.

mod common;

use std::time::Duration;

use common::process::{run, switchyard};
use common::receiver::{verify_with_reference_library, Receiver};
use common::stripe::{deliver, event, send, signature, FakeStripe};
use common::{assert_problem, create_tenant, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    settings_keep_secrets_sealed_and_show_what_to_paste,
    a_checkout_referral_pays_on_invoices_and_a_full_refund_reverses,
    a_repeated_event_is_stored_once,
    a_delayed_payment_converts_when_it_succeeds,
    only_a_fresh_signature_by_the_tenants_secret_is_accepted,
    an_event_of_the_other_mode_is_ignored,
    an_invoice_before_its_checkout_waits_for_the_customer,
    partial_refunds_take_their_share_and_a_lost_dispute_the_rest,
    usage_is_metered_once_per_window_and_a_failed_window_is_sent_again_unchanged,
);

const SECRET: &str = "whsec_test_platform_secret_0123456789";
const WEBHOOK: &str = "/v1/stripe/webhook";

async fn configure(srv: &TestServer, key: &str) -> Value {
    let (status, shown) = srv
        .put(
            "/v1/stripe",
            key,
            json!({"secret_key": "sk_test_51Habcdefghijklmnop4242",
                   "webhook_secrets": [SECRET],
                   "connect_webhook_secrets": ["whsec_test_connect_secret_987654321"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    shown
}

/// A click on a link of a new partner (`email`) to a new campaign with `campaign` fields;
/// returns (partner id, click id). The clock then moves on a minute: Stripe dates events to the
/// second, and the buyer pays a while after clicking.
async fn clicked(srv: &TestServer, campaign: Value, email: &str) -> (String, String) {
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
    let (_, location) = srv
        .click(&format!("/r/{}", link["key"].as_str().unwrap()), &[])
        .await;
    let click = url::Url::parse(&location.unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "click_id")
        .unwrap()
        .1
        .into_owned();
    srv.clock.advance(Duration::from_secs(60));
    (partner["id"].as_str().unwrap().to_owned(), click)
}

/// A partner's click on a recurring 10% campaign; returns (partner id, click id).
async fn referred_click(srv: &TestServer) -> (String, String) {
    let campaign = json!({"commission": {"type": "percent", "bps": 1000}, "recurring": true});
    clicked(srv, campaign, "ref@example.com").await
}

/// Waits until the stored event has left `received`; returns it.
async fn processed(srv: &TestServer, id: &str) -> Value {
    for _ in 0..200 {
        let (status, event) = srv
            .get(&format!("/v1/stripe/events/{id}"), &srv.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{event}");
        if event["state"] != "received" {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Stripe event {id} was not processed");
}

async fn accepted(srv: &TestServer, body: &Value) -> Value {
    let (status, answer) = deliver(srv, WEBHOOK, SECRET, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], false);
    processed(srv, body["id"].as_str().unwrap()).await
}

fn checkout(click: &str) -> Value {
    event(
        "evt_checkout_1",
        "checkout.session.completed",
        json!({"id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
               "client_reference_id": click, "customer": "cus_ref_1",
               "subscription": "sub_1", "payment_intent": null,
               "amount_total": 5000, "currency": "eur", "metadata": {}}),
    )
}

fn invoice(id: &str, invoice: &str, reason: &str, amount: i64) -> Value {
    event(
        id,
        "invoice.paid",
        json!({"id": invoice, "object": "invoice", "customer": "cus_ref_1",
               "billing_reason": reason, "amount_paid": amount, "currency": "eur",
               "parent": {"type": "subscription_details",
                          "subscription_details": {"subscription": "sub_1", "metadata": {}}}}),
    )
}

async fn commission(srv: &TestServer, event: &Value) -> Value {
    let id = event["outcome"]["conversion"]["commission_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no commission: {event}"));
    let (status, commission) = srv
        .get(&format!("/v1/commissions/{id}"), &srv.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    commission
}

async fn settings_keep_secrets_sealed_and_show_what_to_paste(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--public-url", "https://hub.example.com"]).await;
    let (_, empty) = srv.get("/v1/stripe", &srv.admin_key).await;
    assert_eq!(empty["has_secret_key"], false);
    assert_eq!(empty["webhook_secret_count"], 0);

    let shown = configure(&srv, &srv.admin_key).await;
    assert_eq!(shown["has_secret_key"], true);
    assert_eq!(shown["key_mode"], "test");
    assert_eq!(shown["key_last4"], "4242");
    assert_eq!(shown["webhook_secret_count"], 1);
    assert_eq!(shown["connect_webhook_secret_count"], 1);
    assert_eq!(
        shown["webhook_url"],
        "https://hub.example.com/v1/stripe/webhook"
    );
    let (_, again) = srv.get("/v1/stripe", &srv.admin_key).await;
    assert_eq!(again, shown);
    let text = again.to_string();
    assert!(
        !text.contains("sk_test_51H") && !text.contains("whsec_"),
        "{text}"
    );

    // Nothing in clear at rest.
    let db = srv.inspect().await;
    let (key, secrets, connect): (String, String, String) = sqlx::query_as(
        "SELECT secret_key_sealed, webhook_secrets_sealed, connect_secrets_sealed
         FROM stripe_settings",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    db.close().await;
    for sealed in [&key, &secrets, &connect] {
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("sk_test") && !sealed.contains("whsec_"));
    }

    for bad in [
        json!({"secret_key": "pk_test_publishable"}),
        json!({"webhook_secrets": ["not-a-secret"]}),
        json!({"connect_webhook_secrets": vec!["whsec_x1"; 11]}),
    ] {
        let refused = srv.put("/v1/stripe", &srv.admin_key, bad.clone()).await;
        assert_problem(
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    srv.stop().await;
}

async fn a_checkout_referral_pays_on_invoices_and_a_full_refund_reverses(engine: Engine) {
    let srv = TestServer::start(engine).await;
    configure(&srv, &srv.admin_key).await;
    let mut zap = Receiver::start().await;
    let (status, endpoint) = srv
        .post(
            "/v1/webhooks",
            &srv.admin_key,
            json!({"url": zap.url, "event_types": ["commission.accrued"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let (partner, click) = referred_click(&srv).await;

    // Checkout with the click id as client_reference_id: a signup, attributed.
    let signup = accepted(&srv, &checkout(&click)).await;
    assert_eq!(signup["state"], "processed", "{signup}");
    let conversion = &signup["outcome"]["conversion"];
    assert_eq!(conversion["type"], "signup");
    assert_eq!(conversion["attribution"]["partner_id"], partner);
    assert_eq!(conversion["attribution"]["click_id"], click);

    // The first invoice is a purchase of amount_paid; the next cycle a renewal.
    let first = accepted(
        &srv,
        &invoice("evt_inv_1", "in_1", "subscription_create", 5000),
    )
    .await;
    assert_eq!(first["state"], "processed", "{first}");
    assert_eq!(first["outcome"]["conversion"]["type"], "purchase");
    let paid = commission(&srv, &first).await;
    assert_eq!(
        (paid["amount"].as_i64(), paid["currency"].as_str()),
        (Some(500), Some("EUR"))
    );
    assert_eq!(paid["partner_id"], partner);
    assert_eq!(paid["order_id"], "in_1");
    // ...announced to the subscriber, signed, as any commission.accrued.
    let delivery = zap.next().await;
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(
        verify_with_reference_library(secret, &delivery)
            || std::env::var("SWITCHYARD_TEST_REFERENCE_VERIFIER").is_err()
    );
    let message: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(message["type"], "commission.accrued");
    assert_eq!(message["data"]["commission_id"], paid["id"]);
    assert_eq!(message["data"]["event_id"], "evt_inv_1");
    let cycle = accepted(
        &srv,
        &invoice("evt_inv_2", "in_2", "subscription_cycle", 5000),
    )
    .await;
    assert_eq!(cycle["outcome"]["conversion"]["type"], "renewal");
    assert_eq!(commission(&srv, &cycle).await["amount"], 500);

    // A zero invoice earns nothing.
    let free = accepted(&srv, &invoice("evt_inv_0", "in_0", "subscription_cycle", 0)).await;
    assert_eq!(free["state"], "recorded");

    // A full refund of the first invoice's charge reverses its commission only. Since API
    // version 2025-03-31 the charge does not name its invoice: the invoice payment does.
    let paid_by = event(
        "evt_inpay_1",
        "invoice_payment.paid",
        json!({"id": "inpay_1", "object": "invoice_payment", "invoice": "in_1",
               "payment": {"type": "payment_intent", "payment_intent": "pi_1"},
               "amount_paid": 5000, "currency": "eur", "status": "paid"}),
    );
    assert_eq!(accepted(&srv, &paid_by).await["state"], "recorded");
    let refund = event(
        "evt_refund_1",
        "charge.refunded",
        json!({"id": "ch_1", "object": "charge", "amount": 5000, "amount_refunded": 5000,
               "refunded": true, "payment_intent": "pi_1", "currency": "eur"}),
    );
    let refunded = accepted(&srv, &refund).await;
    assert_eq!(refunded["state"], "processed", "{refunded}");
    assert_eq!(
        refunded["outcome"]["conversion"]["reversed_commission_ids"],
        json!([paid["id"]])
    );
    let (_, reversed) = srv
        .get(
            &format!("/v1/commissions/{}", paid["id"].as_str().unwrap()),
            &srv.admin_key,
        )
        .await;
    assert_eq!(reversed["status"], "reversed");
    assert_eq!(commission(&srv, &cycle).await["status"], "pending");

    let types: Vec<String> = srv.messages().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types.iter().filter(|t| *t == "commission.accrued").count(),
        2
    );
    assert_eq!(
        types.iter().filter(|t| *t == "commission.reversed").count(),
        1
    );

    // The list shows them newest first, filtered by type and state.
    let (_, invoices) = srv
        .get(
            "/v1/stripe/events?type=invoice.paid&state=processed",
            &srv.admin_key,
        )
        .await;
    let ids: Vec<&str> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"evt_inv_1") && ids.contains(&"evt_inv_2"));
    srv.stop().await;
}

async fn a_delayed_payment_converts_when_it_succeeds(engine: Engine) {
    let srv = TestServer::start(engine).await;
    configure(&srv, &srv.admin_key).await;
    let (_, click) = referred_click(&srv).await;
    let session = |payment_status: &str| {
        json!({"id": "cs_sepa", "mode": "payment", "client_reference_id": click,
               "customer": "cus_sepa", "payment_intent": "pi_sepa", "payment_status": payment_status,
               "amount_total": 3000, "currency": "eur", "metadata": {}})
    };
    let completed = event(
        "evt_sepa_1",
        "checkout.session.completed",
        session("unpaid"),
    );
    let waiting = accepted(&srv, &completed).await;
    assert_eq!(waiting["state"], "recorded");
    assert_eq!(waiting["outcome"]["reason"], "awaiting_payment");
    let succeeded = event(
        "evt_sepa_2",
        "checkout.session.async_payment_succeeded",
        session("paid"),
    );
    let paid = accepted(&srv, &succeeded).await;
    assert_eq!(paid["state"], "processed", "{paid}");
    assert_eq!(commission(&srv, &paid).await["amount"], 300);
    srv.stop().await;
}

async fn a_repeated_event_is_stored_once(engine: Engine) {
    let srv = TestServer::start(engine).await;
    configure(&srv, &srv.admin_key).await;
    let (_, click) = referred_click(&srv).await;
    let body = event(
        "evt_pay_1",
        "checkout.session.completed",
        json!({"id": "cs_pay_1", "mode": "payment", "client_reference_id": click,
               "customer": "cus_pay_1", "payment_intent": "pi_pay_1",
               "amount_total": 1999, "currency": "usd", "metadata": {}}),
    );
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(deliver(&srv, WEBHOOK, SECRET, &body).await);
    }
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    let duplicates: Vec<&Value> = answers.iter().map(|(_, a)| &a["duplicate"]).collect();
    assert_eq!(duplicates, [&json!(false), &json!(true), &json!(true)]);
    let purchase = processed(&srv, "evt_pay_1").await;
    assert_eq!(commission(&srv, &purchase).await["amount"], 200); // 10% of 19.99, half up
    let (_, all) = srv.get("/v1/stripe/events", &srv.admin_key).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    let accrued = srv
        .messages()
        .await
        .into_iter()
        .filter(|(t, _)| t == "commission.accrued")
        .count();
    assert_eq!(accrued, 1);
    srv.stop().await;
}

async fn only_a_fresh_signature_by_the_tenants_secret_is_accepted(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--tenancy", "multi"]).await;
    configure(&srv, &srv.admin_key).await;
    let (_, other_admin) = create_tenant(&srv, "other").await;
    let other_secret = "whsec_other_tenants_secret_555";
    let (status, _) = srv
        .put(
            "/v1/stripe",
            &other_admin,
            json!({"webhook_secrets": [other_secret]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let body = event("evt_sig_1", "invoice.payment_failed", json!({"id": "in_9"})).to_string();
    let now = srv.clock.now_ms() / 1000;
    let refused = |answer: (StatusCode, Value)| {
        assert_problem(&answer, StatusCode::BAD_REQUEST, "invalid_signature");
        assert!(
            !answer.1.to_string().contains("secret"),
            "reveals nothing: {}",
            answer.1
        );
    };
    refused(send(&srv, WEBHOOK, None, body.clone()).await);
    refused(send(&srv, WEBHOOK, Some("t=1,v1=00"), body.clone()).await);
    refused(
        send(
            &srv,
            WEBHOOK,
            Some(&signature(other_secret, now, &body)),
            body.clone(),
        )
        .await,
    );
    refused(
        send(
            &srv,
            WEBHOOK,
            Some(&signature(SECRET, now - 301, &body)),
            body.clone(),
        )
        .await,
    );
    let tampered = body.replace("in_9", "in_8");
    refused(
        send(
            &srv,
            WEBHOOK,
            Some(&signature(SECRET, now, &body)),
            tampered,
        )
        .await,
    );

    // The other tenant's own URL takes its own secret, and the connect secret works here.
    let (status, answer) = send(
        &srv,
        "/t/other/v1/stripe/webhook",
        Some(&signature(other_secret, now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let connect = "whsec_test_connect_secret_987654321";
    let (status, _) = send(
        &srv,
        WEBHOOK,
        Some(&signature(connect, now - 250, &body)),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(processed(&srv, "evt_sig_1").await["state"], "recorded");
    // No tenant of that slug: refused in the same words, so slugs cannot be probed.
    let (status, answer) = send(&srv, "/t/nope/v1/stripe/webhook", None, "{}".to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["code"], "invalid_signature");
    srv.stop().await;
}

async fn an_event_of_the_other_mode_is_ignored(engine: Engine) {
    let srv = TestServer::start(engine).await;
    configure(&srv, &srv.admin_key).await;
    let mut live = event("evt_live_1", "invoice.paid", json!({"id": "in_live"}));
    live["livemode"] = json!(true);
    let (status, _) = deliver(&srv, WEBHOOK, SECRET, &live).await;
    assert_eq!(status, StatusCode::OK);
    let (_, stored) = srv
        .get("/v1/stripe/events/evt_live_1", &srv.admin_key)
        .await;
    assert_eq!(stored["state"], "ignored");
    assert_eq!(stored["outcome"]["reason"], "livemode_mismatch");
    assert_eq!(stored["payload"]["data"]["object"]["id"], "in_live");
    let unknown = accepted(
        &srv,
        &event("evt_odd", "customer.tax_id.created", json!({})),
    )
    .await;
    assert_eq!(unknown["state"], "ignored");
    // Reprocessing cannot make test data of the other mode count.
    let refused = srv
        .post(
            "/v1/stripe/events/evt_live_1/reprocess",
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_problem(&refused, StatusCode::CONFLICT, "stripe_event_ignored");

    // A connected account's payments are its own: only account.updated is used.
    let mut connected = event(
        "evt_connected_1",
        "checkout.session.completed",
        json!({"id": "cs_c", "mode": "payment", "amount_total": 100, "currency": "eur"}),
    );
    connected["account"] = json!("acct_partner_1");
    deliver(&srv, WEBHOOK, SECRET, &connected).await;
    let (_, stored) = srv
        .get("/v1/stripe/events/evt_connected_1", &srv.admin_key)
        .await;
    assert_eq!(stored["outcome"]["reason"], "connected_account_event");
    let mut updated = event(
        "evt_acct_1",
        "account.updated",
        json!({"id": "acct_partner_1"}),
    );
    updated["account"] = json!("acct_partner_1");
    assert_eq!(accepted(&srv, &updated).await["state"], "recorded");
    srv.stop().await;
}

async fn an_invoice_before_its_checkout_waits_for_the_customer(engine: Engine) {
    let srv = TestServer::start(engine).await;
    configure(&srv, &srv.admin_key).await;
    let (partner, click) = referred_click(&srv).await;

    // Stripe delivered the invoice first: it waits for the checkout that names its customer.
    let early = invoice("evt_inv_early", "in_early", "subscription_create", 2000);
    let (status, _) = deliver(&srv, WEBHOOK, SECRET, &early).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, waiting) = srv
        .get("/v1/stripe/events/evt_inv_early", &srv.admin_key)
        .await;
    assert_eq!(waiting["state"], "received", "{waiting}");

    accepted(&srv, &checkout(&click)).await;
    srv.clock.advance(Duration::from_secs(5));
    let paid = processed(&srv, "evt_inv_early").await;
    assert_eq!(paid["state"], "processed", "{paid}");
    assert_eq!(
        paid["outcome"]["conversion"]["attribution"]["partner_id"],
        partner
    );
    assert_eq!(commission(&srv, &paid).await["amount"], 200);

    // One whose customer never becomes known is recorded unattributed after an hour.
    let mut stranger = invoice("evt_inv_stranger", "in_s", "subscription_create", 2000);
    stranger["data"]["object"]["customer"] = json!("cus_stranger");
    deliver(&srv, WEBHOOK, SECRET, &stranger).await;
    srv.clock.advance(Duration::from_secs(3601));
    let gave_up = processed(&srv, "evt_inv_stranger").await;
    assert_eq!(gave_up["state"], "unattributed", "{gave_up}");
    srv.stop().await;
}

fn refunded(id: &str, total: i64) -> Value {
    event(
        id,
        "charge.refunded",
        json!({"id": "ch_2", "object": "charge", "amount": 10000, "amount_refunded": total,
               "refunded": total == 10000, "payment_intent": "pi_2", "currency": "eur"}),
    )
}

async fn partial_refunds_take_their_share_and_a_lost_dispute_the_rest(engine: Engine) {
    let srv = TestServer::start(engine).await;
    configure(&srv, &srv.admin_key).await;
    let (_, click) = referred_click(&srv).await;
    let purchase = event(
        "evt_pay_2",
        "checkout.session.completed",
        json!({"id": "cs_pay_2", "mode": "payment", "client_reference_id": click,
               "customer": "cus_pay_2", "payment_intent": "pi_2",
               "amount_total": 10000, "currency": "eur", "metadata": {}}),
    );
    let bought = accepted(&srv, &purchase).await;
    let earned = commission(&srv, &bought).await;
    assert_eq!(earned["amount"], 1000);
    let id = earned["id"].as_str().unwrap();
    let current = || async {
        let (_, now) = srv
            .get(&format!("/v1/commissions/{id}"), &srv.admin_key)
            .await;
        (now["status"].clone(), now["reversed_amount"].clone())
    };

    // A quarter refunded takes a quarter back; Stripe's amount_refunded is the charge's total.
    let quarter = accepted(&srv, &refunded("evt_refund_q", 2500)).await;
    assert_eq!(quarter["state"], "processed", "{quarter}");
    assert_eq!(
        quarter["outcome"]["conversion"]["adjusted_commission_ids"],
        json!([id])
    );
    assert_eq!(current().await, (json!("pending"), json!(250)));
    let half = accepted(&srv, &refunded("evt_refund_h", 5000)).await;
    assert_eq!(half["state"], "processed");
    assert_eq!(current().await, (json!("pending"), json!(500)));
    // An event that arrives late, with a smaller total, takes nothing more back.
    let late = accepted(&srv, &refunded("evt_refund_late", 2500)).await;
    assert_eq!(
        late["outcome"]["conversion"]["adjusted_commission_ids"],
        json!([])
    );
    assert_eq!(current().await, (json!("pending"), json!(500)));
    let adjusted: Vec<Value> = srv
        .messages()
        .await
        .into_iter()
        .filter(|(t, _)| t == "commission.adjusted")
        .map(|(_, data)| data["reversed_amount"].clone())
        .collect();
    assert_eq!(adjusted, [json!(250), json!(500)]);

    // An opened dispute reverses nothing; lost, the disputed rest is a refund, and with it the
    // whole order is refunded: the commission is reversed.
    let opened = event(
        "evt_dispute_open",
        "charge.dispute.created",
        json!({"id": "dp_1", "charge": "ch_2", "payment_intent": "pi_2", "amount": 5000,
               "status": "needs_response", "currency": "eur"}),
    );
    assert_eq!(accepted(&srv, &opened).await["state"], "recorded");
    assert_eq!(current().await.0, "pending");
    let lost = event(
        "evt_dispute_lost",
        "charge.dispute.closed",
        json!({"id": "dp_1", "charge": "ch_2", "payment_intent": "pi_2", "amount": 5000,
               "status": "lost", "currency": "eur"}),
    );
    let reversed = accepted(&srv, &lost).await;
    assert_eq!(reversed["state"], "processed", "{reversed}");
    assert_eq!(current().await.0, "reversed");

    // Reprocessing an event that became a conversion keeps that conversion.
    let (status, queued) = srv
        .post(
            "/v1/stripe/events/evt_pay_2/reprocess",
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, queued["state"].as_str()),
        (StatusCode::ACCEPTED, Some("received"))
    );
    let again = processed(&srv, "evt_pay_2").await;
    assert_eq!(
        again["outcome"]["conversion"]["commission_id"],
        earned["id"]
    );
    srv.stop().await;
}

/// A purchase of `amount` in `currency` through a new partner's click; waits for nothing else.
async fn attributed_purchase(srv: &TestServer, n: u32, amount: i64, currency: &str) {
    let (_, click) = clicked(srv, json!({}), &format!("meter{n}@example.com")).await;
    let (status, converted) = srv
        .post(
            "/v1/events",
            &srv.admin_key,
            json!({"event_id": format!("meter-{n}"), "type": "purchase", "click_id": click,
                   "amount": amount, "currency": currency}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{converted}");
    assert!(converted["attribution"].is_object(), "{converted}");
}

async fn usage_is_metered_once_per_window_and_a_failed_window_is_sent_again_unchanged(
    engine: Engine,
) {
    let fake = FakeStripe::start().await;
    let srv = TestServer::start_with(
        engine,
        &[
            "--platform-stripe-key",
            "sk_test_platform_key_1234",
            "--stripe-api-base",
            &fake.url,
            "--stripe-meter-currency",
            "EUR",
        ],
    )
    .await;
    let updated = run(switchyard(&srv.db).args([
        "tenants",
        "update",
        "--slug",
        "default",
        "--billing-customer",
        "cus_operator_1",
    ]));
    assert!(updated.status.success(), "{updated:?}");
    attributed_purchase(&srv, 1, 10_000, "EUR").await;
    attributed_purchase(&srv, 2, 700, "USD").await; // another currency: not this meter's

    // Stripe fails once, asking for a retry: the window stays pending.
    fake.answer(
        500,
        &[("Stripe-Should-Retry", "true")],
        json!({"error": {"type": "api_error", "message": "try again"}}),
    );
    let failed = report(&srv).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["value"], 10_000);
    // A purchase meanwhile waits for the next window; the retry sends the same event.
    attributed_purchase(&srv, 3, 2_000, "EUR").await;
    let retried = report(&srv).await;
    assert_eq!(retried["status"], "reported", "{retried}");
    assert_eq!(retried["value"], 10_000);
    assert_eq!(retried["identifier"], failed["identifier"]);
    let next = report(&srv).await;
    assert_eq!(
        (next["status"].as_str(), next["value"].as_i64()),
        (Some("reported"), Some(2_000))
    );
    assert_ne!(next["identifier"], failed["identifier"]);
    let nothing = report(&srv).await;
    assert_eq!(nothing["status"], "nothing_to_report");

    let sent = fake.received();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for request in &sent {
        assert_eq!(request.path, "/v1/billing/meter_events");
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer sk_test_platform_key_1234")
        );
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            request.field("event_name"),
            Some("switchyard_attributed_revenue")
        );
        assert_eq!(
            request.field("payload[stripe_customer_id]"),
            Some("cus_operator_1")
        );
        assert!(request.field("timestamp").unwrap().parse::<i64>().is_ok());
    }
    assert_eq!(sent[0].form, sent[1].form, "the retry is the same request");
    assert_eq!(sent[0].idempotency_key, sent[1].idempotency_key);
    assert_eq!(sent[0].field("identifier"), failed["identifier"].as_str());
    assert_eq!(sent[0].field("payload[value]"), Some("10000"));
    assert_eq!(sent[2].field("payload[value]"), Some("2000"));
    assert_ne!(sent[2].idempotency_key, sent[0].idempotency_key);
    srv.stop().await;
}

/// Reports usage on demand, once the conversions so far are past the five-minute grace.
async fn report(srv: &TestServer) -> Value {
    srv.clock.advance(Duration::from_secs(301));
    let (status, body) = srv
        .post("/v1/billing/report-usage", &srv.admin_key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["reports"][0].clone()
}
