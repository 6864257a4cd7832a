//! Payouts: partners onboard to Stripe Connect, runs pay each of them once per currency, and
//! every cent stays accounted for. Stripe is a local fake that answers as Stripe documents,
//! idempotency keys included; Stripe's events are signed by Stripe's own library.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::receiver::{verify_with_reference_library, Receiver};
use common::stripe::{deliver, event, FakeStripe};
use common::{assert_problem, Engine, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

on_both_engines!(
    a_partner_onboards_once_and_readiness_follows_stripe,
    a_run_pays_each_ready_partner_once_per_currency_and_carries_the_rest,
    runs_started_at_once_never_pay_twice,
    a_refused_transfer_fails_the_payout_and_frees_its_commissions,
    a_retryable_stripe_error_is_retried_with_the_same_key,
    a_reversed_transfer_reverses_the_payout,
    a_refund_while_paid_applies_when_the_payout_is_reversed,
    refunds_of_paid_commissions_are_clawed_back_only_when_turned_on,
    manual_payouts_are_exported_and_marked_paid,
    a_partner_key_sees_only_its_own_payouts_and_balance,
    settings_are_validated,
);

const SECRET: &str = "whsec_test_platform_secret_0123456789";
const CONNECT_SECRET: &str = "whsec_test_connect_secret_987654321";
const KEY: &str = "sk_test_51Hpayoutsplatformkey4242";

/// A program on the fake Stripe: its key and both signing secrets set, runs on demand only, and
/// a 10% campaign without holdback (commissions approve as soon as the approval job runs).
struct Program {
    srv: TestServer,
    fake: FakeStripe,
    campaign: String,
    /// Partner id -> its link key.
    links: BTreeMap<String, String>,
    events: u32,
}

impl Program {
    async fn start(engine: Engine) -> Program {
        Self::start_with(engine, &[]).await
    }

    async fn start_with(engine: Engine, extra: &[&str]) -> Program {
        let fake = FakeStripe::start().await;
        let mut args = vec![
            "--stripe-api-base",
            &fake.url,
            "--payout-schedule",
            "off",
            "--public-url",
            "https://hub.example.com",
        ];
        args.extend_from_slice(extra);
        let srv = TestServer::start_with(engine, &args).await;
        let (status, shown) = srv
            .put(
                "/v1/stripe",
                &srv.admin_key,
                json!({"secret_key": KEY, "webhook_secrets": [SECRET],
                       "connect_webhook_secrets": [CONNECT_SECRET]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        let campaign = srv
            .campaign(json!({"commission": {"type": "percent", "bps": 1000}, "holdback_days": 0}))
            .await;
        Program {
            srv,
            fake,
            campaign: campaign["id"].as_str().unwrap().to_owned(),
            links: BTreeMap::new(),
            events: 0,
        }
    }

    async fn partner(&self, email: &str) -> String {
        self.srv.partner(email).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A purchase through the partner's link that earns it `commission` (minor units) in
    /// `currency`; returns the commission's id. It is approved by [`Program::approve`].
    async fn earn(&mut self, partner: &str, commission: i64, currency: &str) -> String {
        let srv = &self.srv;
        if !self.links.contains_key(partner) {
            let (status, link) = srv
                .post(
                    &format!("/v1/partners/{partner}/links"),
                    &srv.admin_key,
                    json!({"campaign_id": self.campaign}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{link}");
            let key = link["key"].as_str().unwrap().to_owned();
            self.links.insert(partner.to_owned(), key);
        }
        let (_, location) = srv.click(&format!("/r/{}", self.links[partner]), &[]).await;
        let click = url::Url::parse(&location.unwrap())
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "click_id")
            .unwrap()
            .1
            .into_owned();
        self.events += 1;
        let (status, converted) = srv
            .post(
                "/v1/events",
                &srv.admin_key,
                json!({"event_id": format!("order-{}", self.events), "type": "purchase",
                       "order_id": format!("order-{}", self.events),
                       "click_id": click, "amount": commission * 10, "currency": currency}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{converted}");
        converted["commission_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no commission: {converted}"))
            .to_owned()
    }

    /// Runs the approval job now.
    async fn approve(&self) {
        let state = &self.srv.running.as_ref().unwrap().state;
        switchyard::commissions::approve_matured(state)
            .await
            .unwrap();
    }

    /// Opens the partner's payout account; returns the onboarding answer.
    async fn onboard(&self, partner: &str) -> Value {
        let (status, onboarding) = self
            .srv
            .post(
                &format!("/v1/partners/{partner}/payout-account"),
                &self.srv.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{onboarding}");
        onboarding
    }

    /// Stripe tells the hub, through the Connect destination, that `account` changed.
    async fn account_updated(&self, account: Value) -> Value {
        let id = format!("evt_acct_{}", ulid::Ulid::new());
        let mut updated = event(&id, "account.updated", account.clone());
        updated["account"] = account["id"].clone();
        let (status, answer) =
            deliver(&self.srv, "/v1/stripe/webhook", CONNECT_SECRET, &updated).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        processed(&self.srv, &id).await
    }

    /// A partner whose account finished onboarding.
    async fn ready_partner(&self, email: &str) -> String {
        let partner = self.partner(email).await;
        let onboarding = self.onboard(&partner).await;
        let account = onboarding["account"]["stripe_account_id"].as_str().unwrap();
        let ready = self.fake.make_ready(account);
        self.account_updated(ready).await;
        partner
    }

    /// A webhook endpoint subscribed to `event_type`; returns its receiver and endpoint.
    async fn subscribe(&self, event_type: &str) -> (Receiver, Value) {
        let hook = Receiver::start().await;
        let (status, endpoint) = self
            .srv
            .post(
                "/v1/webhooks",
                &self.srv.admin_key,
                json!({"url": hook.url, "event_types": [event_type]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
        (hook, endpoint)
    }

    /// Replaces the payout settings with `settings`.
    async fn set(&self, settings: Value) {
        let (status, saved) = self
            .srv
            .put("/v1/payouts/settings", &self.srv.admin_key, settings)
            .await;
        assert_eq!(status, StatusCode::OK, "{saved}");
    }

    async fn run(&self) -> Value {
        let (status, run) = self
            .srv
            .post("/v1/payouts/run", &self.srv.admin_key, json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        run
    }

    async fn payouts(&self, query: &str) -> Vec<Value> {
        let (status, list) = self
            .srv
            .get(&format!("/v1/payouts?{query}"), &self.srv.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["data"].as_array().unwrap().clone()
    }

    /// Waits until no payout is pending.
    async fn settled(&self) {
        for _ in 0..300 {
            if self.payouts("status=pending").await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "payouts stayed pending: {:?}",
            self.payouts("status=pending").await
        );
    }

    async fn payout(&self, id: &str) -> Value {
        let (status, payout) = self
            .srv
            .get(&format!("/v1/payouts/{id}"), &self.srv.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{payout}");
        payout
    }

    async fn commission(&self, id: &str) -> Value {
        let (status, commission) = self
            .srv
            .get(&format!("/v1/commissions/{id}"), &self.srv.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{commission}");
        commission
    }

    /// The partner's balance per currency, after checking that its books balance.
    async fn books(&self, partner: &str) -> BTreeMap<String, Value> {
        let (status, balance) = self
            .srv
            .get(
                &format!("/v1/partners/{partner}/balance"),
                &self.srv.admin_key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{balance}");
        let mut by_currency = BTreeMap::new();
        for b in balance["currencies"].as_array().unwrap() {
            let n = |field: &str| b[field].as_i64().unwrap();
            assert_eq!(
                n("paid") + n("in_payouts") + n("approved") + n("pending") + n("carried"),
                n("accrued") - n("reversed") - n("clawed_back"),
                "the books do not balance: {b}"
            );
            by_currency.insert(b["currency"].as_str().unwrap().to_owned(), b.clone());
        }
        by_currency
    }

    fn transfer_keys(&self) -> Vec<String> {
        self.fake
            .received()
            .into_iter()
            .filter(|r| r.path == "/v1/transfers")
            .filter_map(|r| r.idempotency_key)
            .collect()
    }
}

/// Waits until the stored Stripe event has left `received`; returns it.
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

async fn a_partner_onboards_once_and_readiness_follows_stripe(engine: Engine) {
    let p = Program::start(engine).await;
    let partner = p.partner("ada@example.com").await;
    let (status, none) = p
        .srv
        .get(
            &format!("/v1/partners/{partner}/payout-account"),
            &p.srv.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(none["status"], "none", "{none}");

    // Two at once, and a third later: one Express account, a fresh link each time.
    let (first, second) = tokio::join!(p.onboard(&partner), p.onboard(&partner));
    let third = p.onboard(&partner).await;
    assert_eq!(p.fake.accounts().len(), 1, "{:?}", p.fake.accounts());
    let account = first["account"]["stripe_account_id"].as_str().unwrap();
    for answer in [&second, &third] {
        assert_eq!(answer["account"]["stripe_account_id"], account);
    }
    let links: BTreeSet<&str> = [&first, &second, &third]
        .iter()
        .map(|a| a["onboarding_url"].as_str().unwrap())
        .collect();
    assert_eq!(
        links.len(),
        3,
        "links are single-use: each answer has its own"
    );
    assert_eq!(first["account"]["status"], "onboarding");
    assert_eq!(
        first["account"]["currently_due"],
        json!(["external_account", "tos_acceptance.date"])
    );

    // What Stripe was asked: an Express account that can receive transfers, and links that
    // come back to the hub.
    let requests = p.fake.received();
    let created = requests.iter().find(|r| r.path == "/v1/accounts").unwrap();
    assert_eq!(created.field("type"), Some("express"));
    assert_eq!(created.field("email"), Some("ada@example.com"));
    assert_eq!(
        created.field("capabilities[transfers][requested]"),
        Some("true")
    );
    assert_eq!(
        created.field("metadata[switchyard_partner_id]"),
        Some(partner.as_str())
    );
    assert_eq!(
        created.idempotency_key.as_deref(),
        Some(format!("account_{partner}").as_str())
    );
    assert_eq!(
        created.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    let link = requests
        .iter()
        .find(|r| r.path == "/v1/account_links")
        .unwrap();
    assert_eq!(link.field("type"), Some("account_onboarding"));
    assert_eq!(link.field("account"), Some(account));
    let refresh = link.field("refresh_url").unwrap().to_owned();
    assert!(
        refresh.starts_with("https://hub.example.com/v1/payout-onboarding/"),
        "{refresh}"
    );
    assert_eq!(
        link.field("return_url"),
        Some(format!("{refresh}/return").as_str())
    );

    // Stripe's refresh_url mints a new link and redirects to it; a forged token is 404.
    let path = refresh.trim_start_matches("https://hub.example.com");
    let response = p.srv.client.get(p.srv.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&format!("https://connect.stripe.com/setup/e/{account}/")));
    assert!(!links.contains(location));
    let forged = format!("{}x", &path[..path.len() - 1]);
    let response = p.srv.client.get(p.srv.url(&forged)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // account.updated from the Connect destination keeps readiness current.
    let ready = p.fake.make_ready(account);
    let recorded = p.account_updated(ready).await;
    assert_eq!(
        recorded["outcome"]["reason"], "payout_account_updated",
        "{recorded}"
    );
    let (_, shown) = p
        .srv
        .get(
            &format!("/v1/partners/{partner}/payout-account"),
            &p.srv.admin_key,
        )
        .await;
    assert_eq!(shown["status"], "ready", "{shown}");
    assert_eq!(shown["currently_due"], json!([]));
    let restricted = p.fake.restrict(account);
    p.account_updated(restricted).await;
    let (_, shown) = p
        .srv
        .get(
            &format!("/v1/partners/{partner}/payout-account"),
            &p.srv.admin_key,
        )
        .await;
    assert_eq!(shown["status"], "restricted", "{shown}");
    assert_eq!(shown["disabled_reason"], "requirements.past_due");

    // The return page re-reads the account from Stripe.
    p.fake.make_ready(account);
    let response = p
        .srv
        .client
        .get(p.srv.url(&format!("{path}/return")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("data-status=\"ready\""));
    let (_, shown) = p
        .srv
        .get(
            &format!("/v1/partners/{partner}/payout-account"),
            &p.srv.admin_key,
        )
        .await;
    assert_eq!(shown["status"], "ready");

    // Without a Stripe key there is nothing to onboard with.
    let (status, _) = p
        .srv
        .put(
            "/v1/stripe",
            &p.srv.admin_key,
            json!({"webhook_secrets": [SECRET]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let other = p.partner("grace@example.com").await;
    let refused = p
        .srv
        .post(
            &format!("/v1/partners/{other}/payout-account"),
            &p.srv.admin_key,
            json!({}),
        )
        .await;
    assert_problem(&refused, StatusCode::CONFLICT, "stripe_not_configured");
    p.srv.stop().await;
}

async fn a_run_pays_each_ready_partner_once_per_currency_and_carries_the_rest(engine: Engine) {
    let mut p = Program::start(engine).await;
    let (mut hook, endpoint) = p.subscribe("payout.paid").await;
    p.set(json!({"payout_minimum": 1000})).await;

    let ada = p.ready_partner("ada@example.com").await;
    let grace = p.partner("grace@example.com").await; // never onboarded
    let revoked = p.ready_partner("revoked@example.com").await;
    let small = p.ready_partner("small@example.com").await;
    let mut ada_eur = vec![
        p.earn(&ada, 1500, "EUR").await,
        p.earn(&ada, 700, "EUR").await,
    ];
    let ada_usd = p.earn(&ada, 1200, "USD").await;
    p.earn(&grace, 5000, "EUR").await;
    p.earn(&revoked, 5000, "EUR").await;
    p.earn(&small, 999, "EUR").await;
    p.approve().await;
    // Pending (not yet approved) commissions wait for a later run.
    let later = p.earn(&ada, 300, "EUR").await;
    let (status, _) = p
        .srv
        .post(
            &format!("/v1/partners/{revoked}/revoke"),
            &p.srv.admin_key,
            json!({"reason": "fraud"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A dry run shows the plan and writes nothing.
    let (status, dry) = p
        .srv
        .post(
            "/v1/payouts/run",
            &p.srv.admin_key,
            json!({"dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["run_id"], Value::Null);
    assert_eq!(dry["payouts"].as_array().unwrap().len(), 2, "{dry}");
    assert!(p.payouts("").await.is_empty());
    assert!(p.transfer_keys().is_empty());

    let run = p.run().await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let made: BTreeMap<(String, String), i64> = run["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                (
                    m["partner_id"].as_str().unwrap().to_owned(),
                    m["currency"].as_str().unwrap().to_owned(),
                ),
                m["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        made,
        BTreeMap::from([
            ((ada.clone(), "EUR".to_owned()), 2200),
            ((ada.clone(), "USD".to_owned()), 1200),
        ])
    );
    let carried: BTreeMap<String, String> = run["carried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["partner_id"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        carried,
        BTreeMap::from([
            (grace.clone(), "payout_account_not_ready".to_owned()),
            (revoked.clone(), "partner_revoked".to_owned()),
            (small.clone(), "below_minimum".to_owned()),
        ])
    );
    p.settled().await;

    // Each payout is one transfer, keyed by the payout, to the partner's account.
    let payouts = p.payouts(&format!("run_id={run_id}")).await;
    assert_eq!(payouts.len(), 2);
    let ada_account = {
        let (_, account) = p
            .srv
            .get(
                &format!("/v1/partners/{ada}/payout-account"),
                &p.srv.admin_key,
            )
            .await;
        account["stripe_account_id"].as_str().unwrap().to_owned()
    };
    let transfers = p.fake.received();
    for payout in &payouts {
        assert_eq!(payout["status"], "paid", "{payout}");
        let id = payout["id"].as_str().unwrap();
        let sent: Vec<_> = transfers
            .iter()
            .filter(|r| r.path == "/v1/transfers" && r.field("metadata[payout_id]") == Some(id))
            .collect();
        assert_eq!(sent.len(), 1);
        let sent = sent[0];
        assert_eq!(
            sent.idempotency_key.as_deref(),
            Some(format!("payout_{id}").as_str())
        );
        assert_eq!(sent.field("destination"), Some(ada_account.as_str()));
        assert_eq!(sent.field("transfer_group"), Some(run_id.as_str()));
        assert_eq!(
            sent.field("amount").unwrap(),
            payout["amount"].as_i64().unwrap().to_string()
        );
        assert_eq!(
            sent.field("currency").unwrap(),
            payout["currency"].as_str().unwrap().to_ascii_lowercase()
        );
        assert!(payout["transfer_id"].as_str().unwrap().starts_with("tr_"));
    }
    // The account was read again before each transfer.
    let reads = transfers
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/v1/accounts/{ada_account}"))
        .count();
    assert_eq!(reads, 2);

    // The commissions are paid and name their payout; the pending one is not in it.
    let eur = payouts.iter().find(|p| p["currency"] == "EUR").unwrap();
    let detail = p.payout(eur["id"].as_str().unwrap()).await;
    let mut in_it: Vec<String> = detail["commissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    in_it.sort();
    ada_eur.sort();
    assert_eq!(in_it, ada_eur);
    for id in ada_eur.iter().chain([&ada_usd]) {
        let c = p.commission(id).await;
        assert_eq!(c["status"], "paid", "{c}");
        assert!(c["payout_id"].as_str().unwrap().starts_with("pay_"));
    }
    assert_eq!(p.commission(&later).await["status"], "pending");

    // payout.paid is announced, signed, to the subscriber.
    let secret = endpoint["secret"].as_str().unwrap();
    let mut announced = BTreeSet::new();
    for _ in 0..2 {
        let delivery = hook.next().await;
        assert!(
            verify_with_reference_library(secret, &delivery)
                || std::env::var("SWITCHYARD_TEST_REFERENCE_VERIFIER").is_err()
        );
        let message: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(message["type"], "payout.paid");
        assert_eq!(message["data"]["status"], "paid");
        assert_eq!(message["data"]["partner_id"], ada.as_str());
        announced.insert(message["data"]["payout_id"].as_str().unwrap().to_owned());
    }
    let ids: BTreeSet<String> = payouts
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(announced, ids);

    // The books balance; a second run pays nothing twice.
    let books = p.books(&ada).await;
    assert_eq!(books["EUR"]["paid"], 2200);
    assert_eq!(books["EUR"]["pending"], 300);
    assert_eq!(books["USD"]["paid"], 1200);
    p.books(&small).await;
    let again = p.run().await;
    assert!(again["payouts"].as_array().unwrap().is_empty(), "{again}");
    p.settled().await;
    assert_eq!(p.transfer_keys().len(), 2);

    // Grace onboards; the next run pays her carried balance.
    let onboarding = p.onboard(&grace).await;
    let ready = p
        .fake
        .make_ready(onboarding["account"]["stripe_account_id"].as_str().unwrap());
    p.account_updated(ready).await;
    let next = p.run().await;
    assert_eq!(next["payouts"][0]["partner_id"], grace.as_str(), "{next}");
    assert_eq!(next["payouts"][0]["amount"], 5000);
    p.settled().await;
    let runs = p.srv.get("/v1/payout-runs", &p.srv.admin_key).await.1;
    assert_eq!(runs["data"].as_array().unwrap().len(), 3, "{runs}");
    assert_eq!(runs["data"][2]["id"], run_id.as_str());
    assert_eq!(runs["data"][2]["payout_count"], 2);
    p.srv.stop().await;
}

async fn runs_started_at_once_never_pay_twice(engine: Engine) {
    let mut p = Program::start(engine).await;
    let mut partners = Vec::new();
    for n in 0..6 {
        let partner = p.ready_partner(&format!("p{n}@example.com")).await;
        for _ in 0..3 {
            p.earn(&partner, 100 + n, "EUR").await;
        }
        partners.push(partner);
    }
    p.approve().await;
    let (a, b, c) = tokio::join!(p.run(), p.run(), p.run());
    let made: usize = [&a, &b, &c]
        .iter()
        .map(|r| r["payouts"].as_array().unwrap().len())
        .sum();
    assert_eq!(made, partners.len(), "{a}\n{b}\n{c}");
    p.settled().await;
    let payouts = p.payouts("").await;
    assert_eq!(payouts.len(), partners.len());
    let keys: BTreeSet<String> = p.transfer_keys().into_iter().collect();
    assert_eq!(keys.len(), partners.len());
    assert_eq!(p.fake.transfers().len(), partners.len());
    for partner in &partners {
        let books = p.books(partner).await;
        assert_eq!(books["EUR"]["approved"], 0);
        assert_eq!(books["EUR"]["paid"], books["EUR"]["accrued"]);
    }
    p.srv.stop().await;
}

async fn a_refused_transfer_fails_the_payout_and_frees_its_commissions(engine: Engine) {
    let mut p = Program::start(engine).await;
    let (mut hook, _) = p.subscribe("payout.failed").await;
    let ada = p.ready_partner("ada@example.com").await;
    let earned = p.earn(&ada, 2500, "EUR").await;
    p.approve().await;

    // The platform balance is short: a permanent refusal.
    p.fake.answer_on(
        "/v1/transfers",
        400,
        &[],
        json!({"error": {"type": "invalid_request_error", "code": "balance_insufficient",
            "message": "You have insufficient available funds in your Stripe account."}}),
    );
    let first = p.run().await;
    p.settled().await;
    let failed = p
        .payout(first["payouts"][0]["payout_id"].as_str().unwrap())
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_code"], "balance_insufficient");
    assert!(failed["failure_message"]
        .as_str()
        .unwrap()
        .contains("insufficient"));
    assert_eq!(failed["commissions"], json!([]));
    // Before failing it, the hub looked for a transfer an earlier request might have made.
    let lookup = p
        .fake
        .received()
        .into_iter()
        .find(|r| r.method == "GET" && r.path == "/v1/transfers")
        .expect("a lookup before failing");
    assert_eq!(lookup.field("transfer_group"), first["run_id"].as_str());
    let message: Value = serde_json::from_slice(&hook.next().await.body).unwrap();
    assert_eq!(message["type"], "payout.failed");
    assert_eq!(message["data"]["failure_code"], "balance_insufficient");
    assert_eq!(message["data"]["commission_ids"], json!([earned]));
    let freed = p.commission(&earned).await;
    assert_eq!(
        (freed["status"].as_str(), &freed["payout_id"]),
        (Some("approved"), &Value::Null)
    );
    assert_eq!(p.books(&ada).await["EUR"]["approved"], 2500);

    // The next run pays it, under a new payout and key.
    let second = p.run().await;
    p.settled().await;
    let paid = p
        .payout(second["payouts"][0]["payout_id"].as_str().unwrap())
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(p.commission(&earned).await["status"], "paid");
    assert_eq!(p.fake.transfers().len(), 1);

    // An account Stripe restricted meanwhile fails the payout before any transfer.
    p.earn(&ada, 800, "EUR").await;
    p.approve().await;
    let account = p.fake.accounts()[0]["id"].as_str().unwrap().to_owned();
    p.fake.restrict(&account); // Stripe knows; no account.updated has arrived yet
    let third = p.run().await;
    p.settled().await;
    let refused = p
        .payout(third["payouts"][0]["payout_id"].as_str().unwrap())
        .await;
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["failure_code"], "account_not_ready");
    assert_eq!(p.fake.transfers().len(), 1);
    let (_, shown) = p
        .srv
        .get(
            &format!("/v1/partners/{ada}/payout-account"),
            &p.srv.admin_key,
        )
        .await;
    assert_eq!(shown["status"], "restricted");
    // ...and the next run carries the balance until the partner is ready again.
    let carried = p.run().await;
    assert_eq!(
        carried["carried"][0]["reason"], "payout_account_not_ready",
        "{carried}"
    );
    p.books(&ada).await;
    p.srv.stop().await;
}

async fn a_retryable_stripe_error_is_retried_with_the_same_key(engine: Engine) {
    let mut p = Program::start(engine).await;
    let ada = p.ready_partner("ada@example.com").await;
    p.earn(&ada, 4000, "EUR").await;
    p.approve().await;
    p.fake.answer_on(
        "/v1/transfers",
        500,
        &[],
        json!({"error": {"type": "api_error", "message": "An unknown error occurred"}}),
    );
    let run = p.run().await;
    p.settled().await;
    let id = run["payouts"][0]["payout_id"].as_str().unwrap();
    assert_eq!(p.payout(id).await["status"], "paid");
    let keys = p.transfer_keys();
    assert_eq!(
        keys,
        vec![format!("payout_{id}"); 2],
        "the retry is the same request"
    );
    assert_eq!(p.fake.transfers().len(), 1);

    // Stripe makes the transfer but its answer is lost, and the retry comes more than a day
    // later, when Stripe may have forgotten the key: the hub finds the transfer instead of
    // asking again.
    p.earn(&ada, 900, "EUR").await;
    p.approve().await;
    p.fake.lose_answer_on("/v1/transfers");
    let before = p.transfer_keys().len();
    let run = p.run().await;
    let id = run["payouts"][0]["payout_id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        if p.transfer_keys().len() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.srv.clock.advance(Duration::from_secs(25 * 3600));
    p.settled().await;
    let paid = p.payout(&id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    let made = p.fake.transfers();
    assert_eq!(made.len(), 2);
    assert_eq!(paid["transfer_id"], made[1]["id"]);
    assert_eq!(
        p.transfer_keys().len(),
        before + 1,
        "found, not asked again"
    );
    p.srv.stop().await;
}

async fn a_refund_while_paid_applies_when_the_payout_is_reversed(engine: Engine) {
    for clawback in [false, true] {
        let mut p = Program::start(engine).await;
        p.set(json!({"clawback_paid_refunds": clawback})).await;
        let ada = p.ready_partner("ada@example.com").await;
        let refunded = p.earn(&ada, 1000, "EUR").await;
        let kept = p.earn(&ada, 600, "EUR").await;
        p.approve().await;
        p.run().await;
        p.settled().await;
        // Half of the first order is refunded while it is paid.
        let (status, _) = p
            .srv
            .post(
                "/v1/events",
                &p.srv.admin_key,
                json!({"event_id": "refund-half", "type": "refund", "order_id": "order-1",
                       "amount": 5000, "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        // Then the money comes back: the transfer is reversed.
        let mut transfer = p.fake.transfers()[0].clone();
        transfer["reversed"] = json!(true);
        let (status, _) = deliver(
            &p.srv,
            "/v1/stripe/webhook",
            SECRET,
            &event("evt_rev", "transfer.reversed", transfer),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        processed(&p.srv, "evt_rev").await;
        // Unpaid again, the commission takes its refund itself, and nothing is clawed back.
        let c = p.commission(&refunded).await;
        assert_eq!(
            (c["status"].as_str(), c["reversed_amount"].as_i64()),
            (Some("approved"), Some(500)),
            "{c}"
        );
        assert_eq!(p.commission(&kept).await["reversed_amount"], 0);
        let books = p.books(&ada).await;
        assert_eq!(
            books["EUR"]["approved"],
            500 + 600,
            "clawback {clawback}: {books:?}"
        );
        assert_eq!(books["EUR"]["carried"], 0);
        assert_eq!(books["EUR"]["clawed_back"], 0);
        let again = p.run().await;
        assert_eq!(again["payouts"][0]["amount"], 1100, "{again}");
        p.settled().await;
        p.books(&ada).await;
        p.srv.stop().await;
    }
}

async fn a_reversed_transfer_reverses_the_payout(engine: Engine) {
    let mut p = Program::start(engine).await;
    let ada = p.ready_partner("ada@example.com").await;
    let earned = p.earn(&ada, 1800, "EUR").await;
    p.approve().await;
    let run = p.run().await;
    p.settled().await;
    let id = run["payouts"][0]["payout_id"].as_str().unwrap().to_owned();
    let transfer = p.fake.transfers()[0].clone();

    // A partial reversal is recorded and changes nothing.
    let mut partial = transfer.clone();
    partial["amount_reversed"] = json!(500);
    let (status, _) = deliver(
        &p.srv,
        "/v1/stripe/webhook",
        SECRET,
        &event("evt_rev_part", "transfer.reversed", partial),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let recorded = processed(&p.srv, "evt_rev_part").await;
    assert_eq!(
        recorded["outcome"]["reason"], "partially_reversed",
        "{recorded}"
    );
    assert_eq!(p.payout(&id).await["status"], "paid");

    let mut reversed = transfer;
    reversed["reversed"] = json!(true);
    reversed["amount_reversed"] = json!(1800);
    for event_id in ["evt_rev_full", "evt_rev_again"] {
        let (status, _) = deliver(
            &p.srv,
            "/v1/stripe/webhook",
            SECRET,
            &event(event_id, "transfer.reversed", reversed.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        processed(&p.srv, event_id).await;
    }
    assert_eq!(p.payout(&id).await["status"], "reversed");
    let again = p.commission(&earned).await;
    assert_eq!(
        (again["status"].as_str(), &again["payout_id"]),
        (Some("approved"), &Value::Null)
    );
    let books = p.books(&ada).await;
    assert_eq!(
        (
            books["EUR"]["paid"].as_i64(),
            books["EUR"]["approved"].as_i64()
        ),
        (Some(0), Some(1800))
    );
    let messages = p.srv.messages().await;
    let reversals = messages
        .iter()
        .filter(|(t, _)| t == "payout.reversed")
        .count();
    assert_eq!(reversals, 1, "the repeated reversal changes nothing");
    p.srv.stop().await;
}

async fn refunds_of_paid_commissions_are_clawed_back_only_when_turned_on(engine: Engine) {
    let mut p = Program::start(engine).await;
    let ada = p.ready_partner("ada@example.com").await;
    let kept = p.earn(&ada, 1000, "EUR").await;
    p.approve().await;
    p.run().await;
    p.settled().await;

    // Off (the default): the refund is recorded on the paid commission, nothing more.
    let refund =
        |order: &str, id: &str| json!({"event_id": id, "type": "refund", "order_id": order});
    let (status, refunded) = p
        .srv
        .post(
            "/v1/events",
            &p.srv.admin_key,
            refund("order-1", "refund-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{refunded}");
    assert_eq!(refunded["refunded_paid_commission_ids"], json!([kept]));
    assert_eq!(refunded["clawed_back_commission_ids"], json!([]));
    let books = p.books(&ada).await;
    assert_eq!(
        (
            books["EUR"]["paid"].as_i64(),
            books["EUR"]["carried"].as_i64()
        ),
        (Some(1000), Some(0))
    );

    // On: a refund of a paid commission leaves a negative balance.
    p.set(json!({"clawback_paid_refunds": true})).await;
    let clawed = p.earn(&ada, 1200, "EUR").await;
    p.approve().await;
    p.run().await;
    p.settled().await;
    let (_, refunded) = p
        .srv
        .post(
            "/v1/events",
            &p.srv.admin_key,
            refund("order-2", "refund-2"),
        )
        .await;
    assert_eq!(refunded["clawed_back_commission_ids"], json!([clawed]));
    // The same refund again claws nothing back twice.
    let (_, repeated) = p
        .srv
        .post(
            "/v1/events",
            &p.srv.admin_key,
            refund("order-2", "refund-2b"),
        )
        .await;
    assert_eq!(
        repeated["clawed_back_commission_ids"],
        json!([]),
        "{repeated}"
    );
    let books = p.books(&ada).await;
    assert_eq!(books["EUR"]["carried"], -1200, "{books:?}");
    assert_eq!(books["EUR"]["clawed_back"], 1200);

    // Less earned than owed: no payout, the balance carries (never a negative transfer).
    p.earn(&ada, 500, "EUR").await;
    p.approve().await;
    let short = p.run().await;
    assert!(short["payouts"].as_array().unwrap().is_empty(), "{short}");
    assert_eq!(short["carried"][0]["reason"], "negative_balance");
    assert_eq!(short["carried"][0]["amount"], -700);
    // More earned: the next payout absorbs what is owed.
    p.earn(&ada, 1000, "EUR").await;
    p.approve().await;
    let paid = p.run().await;
    assert_eq!(paid["payouts"][0]["amount"], 300, "{paid}");
    assert_eq!(paid["payouts"][0]["commissions_amount"], 1500);
    assert_eq!(paid["payouts"][0]["clawed_back"], 1200);
    p.settled().await;
    let books = p.books(&ada).await;
    assert_eq!(books["EUR"]["carried"], 0);
    assert_eq!(books["EUR"]["paid"], 1000 + 1200 + 300);
    let amounts: Vec<i64> = p
        .fake
        .transfers()
        .iter()
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![1000, 1200, 300]);
    p.srv.stop().await;
}

async fn manual_payouts_are_exported_and_marked_paid(engine: Engine) {
    let mut p = Program::start(engine).await;
    let mut tracker = Receiver::start().await;
    p.set(json!({"method": "manual"})).await;
    let ada = p.partner("ada@example.com").await;
    let (status, postback) = p
        .srv
        .post(
            &format!("/v1/partners/{ada}/postbacks"),
            &p.srv.admin_key,
            json!({"url_template": format!("{}/pb?payout={{payout_id}}&amount={{commission_amount}}", tracker.url),
                   "event_types": ["payout.paid"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{postback}");
    let grace = p.partner("grace@example.com").await;
    let (status, _) = p
        .srv
        .patch(
            &format!("/v1/partners/{grace}"),
            &p.srv.admin_key,
            json!({"name": "=cmd|' /C calc'!A0"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    p.earn(&ada, 4250, "EUR").await;
    p.earn(&grace, 1000, "JPY").await;
    p.approve().await;

    // Not on Connect: no account needed, no transfer made.
    let run = p.run().await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["payouts"].as_array().unwrap().len(), 2, "{run}");
    let response = p
        .srv
        .send(
            reqwest::Method::GET,
            &format!("/v1/payouts/export.csv?run_id={run_id}"),
            Some(&p.srv.admin_key),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("payout_id,run_id,partner_id,partner_name,partner_email,amount"));
    assert!(
        csv.contains(",ada@example.com,42.50,4250,EUR,manual,pending,"),
        "{csv}"
    );
    assert!(csv.contains(",grace@example.com,1000,1000,JPY,"), "{csv}");
    assert!(
        csv.contains(",'=cmd|' /C calc'!A0,"),
        "a formula stays text: {csv}"
    );
    assert!(p.fake.received().iter().all(|r| r.path != "/v1/transfers"));

    let ada_payout = p.payouts(&format!("partner_id={ada}")).await[0].clone();
    let id = ada_payout["id"].as_str().unwrap();
    let invalid = p
        .srv
        .post(
            &format!("/v1/payouts/{id}/mark-paid"),
            &p.srv.admin_key,
            json!({"reference": " "}),
        )
        .await;
    assert_problem(
        &invalid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, marked) = p
        .srv
        .post(
            &format!("/v1/payouts/{id}/mark-paid"),
            &p.srv.admin_key,
            json!({"reference": "PAYPAL-BATCH-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{marked}");
    assert_eq!(
        (marked["status"].as_str(), marked["reference"].as_str()),
        (Some("paid"), Some("PAYPAL-BATCH-77"))
    );
    let detail = p.payout(id).await;
    assert!(detail["commissions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "paid"));

    // The partner's tracker hears of the payout, with its id.
    let fired = tracker.next().await;
    let query: BTreeMap<String, String> = fired
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(query["payout"], id);
    assert_eq!(query["amount"], "42.50");

    // Marked twice: answered as it is, announced once.
    let (status, again) = p
        .srv
        .post(
            &format!("/v1/payouts/{id}/mark-paid"),
            &p.srv.admin_key,
            json!({"reference": "other"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["reference"], "PAYPAL-BATCH-77");
    let announced = p
        .srv
        .messages()
        .await
        .iter()
        .filter(|(t, _)| t == "payout.paid")
        .count();
    assert_eq!(announced, 1);
    let missing = p
        .srv
        .post(
            "/v1/payouts/pay_01JB3Z5R6S7T8V9W0X1Y2Z3A4B/mark-paid",
            &p.srv.admin_key,
            json!({"reference": "x"}),
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "payout_not_found");
    p.books(&ada).await;
    p.books(&grace).await;
    p.srv.stop().await;
}

async fn a_partner_key_sees_only_its_own_payouts_and_balance(engine: Engine) {
    let mut p = Program::start(engine).await;
    let ada = p.ready_partner("ada@example.com").await;
    let grace = p.ready_partner("grace@example.com").await;
    p.earn(&ada, 1000, "EUR").await;
    p.earn(&grace, 2000, "EUR").await;
    p.approve().await;
    p.run().await;
    p.settled().await;
    let (_, ada_key) = p
        .srv
        .mint(json!({"name": "ada", "kind": "partner", "partner_id": ada}))
        .await;
    let (_, own) = p.srv.get("/v1/payouts", &ada_key).await;
    let own = own["data"].as_array().unwrap().clone();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["partner_id"], ada.as_str());
    let graces = p.payouts(&format!("partner_id={grace}")).await;
    let grace_payout = graces[0]["id"].as_str().unwrap();
    let hidden = p
        .srv
        .get(&format!("/v1/payouts/{grace_payout}"), &ada_key)
        .await;
    assert_problem(&hidden, StatusCode::NOT_FOUND, "payout_not_found");
    let (status, _) = p
        .srv
        .get(
            &format!("/v1/payouts/{}", own[0]["id"].as_str().unwrap()),
            &ada_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let asked = p
        .srv
        .get(&format!("/v1/payouts?partner_id={grace}"), &ada_key)
        .await;
    assert_problem(&asked, StatusCode::FORBIDDEN, "forbidden_partner");
    let (status, balance) = p
        .srv
        .get(&format!("/v1/partners/{ada}/balance"), &ada_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(balance["currencies"][0]["paid"], 1000);
    let other = p
        .srv
        .get(&format!("/v1/partners/{grace}/balance"), &ada_key)
        .await;
    assert_problem(&other, StatusCode::FORBIDDEN, "forbidden_partner");
    for path in ["/v1/payouts/run", "/v1/payouts/settings"] {
        let refused = p.srv.post(path, &ada_key, json!({})).await;
        assert_eq!(refused.0.as_u16() / 100, 4, "{path}: {}", refused.1);
        assert_ne!(refused.0, StatusCode::OK);
    }
    // A scoped key needs payouts:read.
    let (_, reader) = p
        .srv
        .mint(json!({"name": "books", "scopes": ["payouts:read"]}))
        .await;
    let (status, all) = p.srv.get("/v1/payouts", &reader).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let (_, crm) = p
        .srv
        .mint(json!({"name": "crm", "scopes": ["events:write"]}))
        .await;
    let refused = p.srv.get("/v1/payouts", &crm).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "forbidden_scope");
    p.srv.stop().await;
}

async fn settings_are_validated(engine: Engine) {
    let p = Program::start(engine).await;
    let (status, defaults) = p.srv.get("/v1/payouts/settings", &p.srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        defaults,
        json!({"method": "stripe_connect", "payout_minimum": 0, "clawback_paid_refunds": false,
               "onboarding_return_url": null, "schedule": null, "updated_at": null})
    );
    let bad = p
        .srv
        .put(
            "/v1/payouts/settings",
            &p.srv.admin_key,
            json!({"payout_minimum": -1, "onboarding_return_url": "javascript:alert(1)"}),
        )
        .await;
    let problem = assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let fields: BTreeSet<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["payout_minimum", "onboarding_return_url"])
    );
    let unknown = p
        .srv
        .put(
            "/v1/payouts/settings",
            &p.srv.admin_key,
            json!({"method": "cheque"}),
        )
        .await;
    assert_problem(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let (status, saved) = p
        .srv
        .put(
            "/v1/payouts/settings",
            &p.srv.admin_key,
            json!({"payout_minimum": 5000, "onboarding_return_url": "https://portal.example.com/paid"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["payout_minimum"], 5000);
    // The return URL is the tenant's from now on.
    let partner = p.partner("ada@example.com").await;
    p.onboard(&partner).await;
    let link = p
        .fake
        .received()
        .into_iter()
        .find(|r| r.path == "/v1/account_links")
        .unwrap();
    assert_eq!(
        link.field("return_url"),
        Some("https://portal.example.com/paid")
    );
    // A body that is not JSON is refused with a problem, not a 500.
    let response = p
        .srv
        .client
        .post(p.srv.url("/v1/payouts/run"))
        .bearer_auth(&p.srv.admin_key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    p.srv.stop().await;
}
