//! The server binary pays partners through a slow Stripe, is killed with SIGKILL while
//! transfers are in flight, and is started again: every payout is transferred exactly once.
//! And two server processes on one database, both running payouts at once, never pay twice.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{free_port, key_in, switchyard, terminate, wait_ready};
use common::stripe::{event, signature, FakeStripe};
use common::{Engine, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard::db::Db;

on_both_engines!(
    a_killed_server_transfers_every_payout_exactly_once_after_restart,
    two_servers_running_payouts_at_once_pay_each_partner_once,
);

const KEY: &str = "sk_test_51Hcrashplatformkey4242";
const CONNECT_SECRET: &str = "whsec_test_connect_secret_crash_0042";

fn serve(db: &TestDb, port: u16, stripe: &str) -> Child {
    switchyard(db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SWITCHYARD_OUTBOUND_ALLOW", "127.0.0.0/8")
        .env("SWITCHYARD_STRIPE_API_BASE", stripe)
        .env("SWITCHYARD_STRIPE_RATE_LIMIT", "1000")
        .env("SWITCHYARD_PAYOUT_SCHEDULE", "off")
        .env("SWITCHYARD_JOB_LEASE_SECS", "2")
        .env("SWITCHYARD_RATE_LIMIT_PER_KEY", "10000")
        .env("SWITCHYARD_RATE_LIMIT_PER_IP", "10000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A program in a running server: `partners` partners with ready Connect accounts and three
/// approved commissions each.
struct Program {
    base: String,
    admin: String,
    client: reqwest::Client,
}

impl Program {
    /// Starts the first server on `db`; returns it with its program.
    async fn start(db: &TestDb, fake: &FakeStripe) -> (Child, u16, Program) {
        let port = free_port();
        let mut server = serve(db, port, &fake.url);
        let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
        let admin = loop {
            let line = lines.next().expect("the first-start notice").unwrap();
            if let Some(key) = key_in(&line) {
                break key;
            }
        };
        // Keep reading, so the server's later log lines never meet a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&base).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        (
            server,
            port,
            Program {
                base,
                admin,
                client,
            },
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Partners with ready accounts and approved commissions; returns their ids.
    async fn arrange(&self, db: &TestDb, fake: &FakeStripe, partners: usize) -> Vec<String> {
        let response = self
            .client
            .put(format!("{}/v1/stripe", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"secret_key": KEY, "connect_webhook_secrets": [CONNECT_SECRET]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let campaign = self
            .post(
                "/v1/campaigns",
                json!({"name": "Payouts", "destination_url": "https://shop.example.com",
                       "commission": {"type": "percent", "bps": 1000}, "holdback_days": 0}),
            )
            .await;
        let mut ids = Vec::new();
        for n in 0..partners {
            let partner = self
                .post(
                    "/v1/partners",
                    json!({"email": format!("p{n}@example.com"), "name": format!("P{n}")}),
                )
                .await;
            let id = partner["id"].as_str().unwrap().to_owned();
            let onboarding = self
                .post(&format!("/v1/partners/{id}/payout-account"), json!({}))
                .await;
            let account =
                fake.make_ready(onboarding["account"]["stripe_account_id"].as_str().unwrap());
            self.account_updated(&account, n).await;
            let link = self
                .post(
                    &format!("/v1/partners/{id}/links"),
                    json!({"campaign_id": campaign["id"]}),
                )
                .await;
            for k in 0..3 {
                let click = self
                    .client
                    .get(format!("{}/r/{}", self.base, link["key"].as_str().unwrap()))
                    .send()
                    .await
                    .unwrap();
                let location = click.headers()["location"].to_str().unwrap().to_owned();
                let click_id = url::Url::parse(&location)
                    .unwrap()
                    .query_pairs()
                    .find(|(k, _)| k == "click_id")
                    .unwrap()
                    .1
                    .into_owned();
                let converted = self
                    .post(
                        "/v1/events",
                        json!({"event_id": format!("order-{n}-{k}"), "type": "purchase",
                               "click_id": click_id, "amount": 10_000 + n, "currency": "EUR"}),
                    )
                    .await;
                assert!(converted["commission_id"].is_string(), "{converted}");
            }
            ids.push(id);
        }
        // The approval job runs on the minute; the holdback is over, so approve them now.
        let store = Db::connect(&db.url, 1).await.unwrap();
        sqlx::query("UPDATE commissions SET status = 'approved', approved_at = 1")
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
        ids
    }

    async fn account_updated(&self, account: &Value, n: usize) {
        let mut updated = event(&format!("evt_acct_{n}"), "account.updated", account.clone());
        updated["account"] = account["id"].clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        updated["created"] = json!(now);
        let body = updated.to_string();
        let response = self
            .client
            .post(format!("{}/v1/stripe/webhook", self.base))
            .header("stripe-signature", signature(CONNECT_SECRET, now, &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let deadline = Instant::now() + Duration::from_secs(20);
        let partner = account["metadata"]["switchyard_partner_id"]
            .as_str()
            .unwrap();
        loop {
            let partner_account = self
                .get(&format!("/v1/partners/{partner}/payout-account"))
                .await;
            if partner_account["status"] == "ready" {
                return;
            }
            assert!(Instant::now() < deadline, "account.updated was not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn payouts(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get(&format!("/v1/payouts?limit=200&cursor={cursor}"))
                .await;
            all.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return all,
            }
        }
    }

    /// Waits until every payout is paid; returns them.
    async fn all_paid(&self, expected: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let payouts = self.payouts().await;
            if payouts.len() == expected && payouts.iter().all(|p| p["status"] == "paid") {
                return payouts;
            }
            assert!(
                Instant::now() < deadline,
                "not all paid: {:?}",
                payouts.iter().map(|p| &p["status"]).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn kill(server: &mut Child) {
    Command::new("kill")
        .args(["-KILL", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();
}

/// Every payout has exactly one transfer at Stripe, for its amount, and names it.
fn exactly_once(fake: &FakeStripe, payouts: &[Value]) -> (usize, usize) {
    let keys: BTreeSet<String> = fake
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/transfers")
        .filter_map(|r| r.idempotency_key)
        .collect();
    let expected: BTreeSet<String> = payouts
        .iter()
        .map(|p| format!("payout_{}", p["id"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, expected);
    let transfers = fake.transfers();
    assert_eq!(transfers.len(), payouts.len(), "one transfer per payout");
    for payout in payouts {
        let transfer = transfers
            .iter()
            .find(|t| t["metadata"]["payout_id"] == payout["id"])
            .unwrap();
        assert_eq!(payout["transfer_id"], transfer["id"]);
        assert_eq!(payout["amount"], transfer["amount"]);
    }
    (transfers.len(), fake.replays())
}

async fn a_killed_server_transfers_every_payout_exactly_once_after_restart(engine: Engine) {
    const PARTNERS: usize = 24;
    let db = TestDb::create(engine).await;
    let fake = FakeStripe::start().await;
    let (mut server, port, program) = Program::start(&db, &fake).await;
    program.arrange(&db, &fake, PARTNERS).await;

    // Stripe now answers slowly: transfers it has made are still unanswered when the kill lands.
    fake.delay(Duration::from_millis(400));
    let run = program.post("/v1/payouts/run", json!({})).await;
    assert_eq!(run["payouts"].as_array().unwrap().len(), PARTNERS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.transfers().len() < 4 {
        assert!(Instant::now() < deadline, "transfers never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(&mut server);
    let before = fake.transfers().len();
    assert!(before < PARTNERS, "the kill landed mid-run");
    let recorded = program_paid(&db).await;
    assert!(
        recorded < before,
        "some transfers were made but never recorded ({recorded} of {before})"
    );

    fake.delay(Duration::ZERO);
    let mut restarted = serve(&db, port, &fake.url);
    wait_ready(&program.base).await;
    let payouts = program.all_paid(PARTNERS).await;
    let (transfers, replays) = exactly_once(&fake, &payouts);
    assert!(
        replays > 0,
        "a transfer made before the kill was asked again and replayed"
    );
    println!(
        "payouts {}, transfers {transfers}, replays {replays}",
        payouts.len()
    );
    assert!(terminate(&mut restarted).success());
}

/// Payouts the database has recorded as paid.
async fn program_paid(db: &TestDb) -> usize {
    let store = Db::connect(&db.url, 1).await.unwrap();
    let (paid,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payouts WHERE status = 'paid'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    paid as usize
}

async fn two_servers_running_payouts_at_once_pay_each_partner_once(engine: Engine) {
    const PARTNERS: usize = 16;
    let db = TestDb::create(engine).await;
    let fake = FakeStripe::start().await;
    let (mut first, _, program) = Program::start(&db, &fake).await;
    program.arrange(&db, &fake, PARTNERS).await;
    let port = free_port();
    let mut second = serve(&db, port, &fake.url);
    let other = Program {
        base: format!("http://127.0.0.1:{port}"),
        admin: program.admin.clone(),
        client: program.client.clone(),
    };
    wait_ready(&other.base).await;
    fake.delay(Duration::from_millis(50));
    let (a, b, c, d) = tokio::join!(
        program.post("/v1/payouts/run", json!({})),
        other.post("/v1/payouts/run", json!({})),
        program.post("/v1/payouts/run", json!({})),
        other.post("/v1/payouts/run", json!({})),
    );
    let made: usize = [&a, &b, &c, &d]
        .iter()
        .map(|r| r["payouts"].as_array().unwrap().len())
        .sum();
    assert_eq!(made, PARTNERS);
    let payouts = program.all_paid(PARTNERS).await;
    let partners: BTreeSet<&str> = payouts
        .iter()
        .map(|p| p["partner_id"].as_str().unwrap())
        .collect();
    assert_eq!(partners.len(), PARTNERS);
    let (transfers, replays) = exactly_once(&fake, &payouts);
    println!(
        "payouts {}, transfers {transfers}, replays {replays}",
        payouts.len()
    );
    assert!(terminate(&mut first).success());
    assert!(terminate(&mut second).success());
}
