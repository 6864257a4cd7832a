//! Payouts benchmark: a run over 10,000 partners with 20 approved commissions each (200,000
//! commissions), on both engines.
//!
//! - Building the run (`POST /v1/payouts/run`: plan, one payout per partner with its
//!   commissions bound, one transfer job each), beside the reference measured in the same run:
//!   one `UPDATE` touching the same 200,000 commission rows in a single statement, the floor of
//!   writing each commission once.
//! - Transfers against a fake Stripe that answers at once, beside the configured request rate
//!   (`SWITCHYARD_STRIPE_RATE_LIMIT`, here 500/s): each transfer is two requests (the account
//!   re-read, then `POST /v1/transfers`), so transfers/s should be close to half of it, and no
//!   second may carry more requests than the limit.
//!
//! The partners and commissions are written with SQL (200,000 conversions through the API
//! would be the events benchmark); everything measured goes through the server.
//!
//!     cargo bench --bench payouts                    # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench payouts

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::HeaderMap;
use common::program::{admin, engines, start};
use serde_json::{json, Value};
use switchyard::db::Db;
use switchyard::ids;

const PARTNERS: usize = 10_000;
const COMMISSIONS_EACH: usize = 20;
const RATE_LIMIT: u32 = 500;
/// Rows per seeding statement.
const SEED_BATCH: usize = 500;

/// Requests the fake received: when, and whether it was a transfer.
type Log = Arc<Mutex<Vec<(Instant, bool)>>>;

/// Stripe, answering at once once `open` is set (until then it holds requests, so the run is
/// built without transfers competing for the database).
async fn fake_stripe(open: Arc<AtomicBool>) -> (String, Log) {
    let log: Log = Arc::default();
    let (seen, gate) = (log.clone(), open.clone());
    let held = move || {
        let gate = gate.clone();
        async move {
            while !gate.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let wait = held.clone();
    let seen_get = seen.clone();
    let app = axum::Router::new()
        .route(
            "/v1/accounts/{id}",
            axum::routing::get(move |Path(id): Path<String>| {
                let (seen, wait) = (seen_get.clone(), wait.clone());
                async move {
                    wait().await;
                    seen.lock().unwrap().push((Instant::now(), false));
                    axum::Json(
                        json!({"id": id, "object": "account", "details_submitted": true,
                        "payouts_enabled": true, "capabilities": {"transfers": "active"},
                        "requirements": {"currently_due": [], "disabled_reason": null}}),
                    )
                }
            }),
        )
        .route(
            "/v1/transfers",
            axum::routing::post(move |headers: HeaderMap| {
                let (seen, wait) = (seen.clone(), held.clone());
                async move {
                    wait().await;
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((Instant::now(), true));
                        seen.len()
                    };
                    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
                    axum::Json(json!({"id": format!("tr_bench_{n}"), "object": "transfer",
                        "metadata": {"key": key}}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

/// 10,000 active partners with ready accounts and 20 approved commissions each.
async fn seed(db: &Db, tenant: &str, campaign: &str) {
    let now = 1_764_000_000_000_i64;
    let partners: Vec<String> = (0..PARTNERS).map(|_| ids::new("ptr")).collect();
    for (batch_no, batch) in partners.chunks(SEED_BATCH).enumerate() {
        let mut tx = db.write(tenant).await.unwrap();
        let rows: Vec<String> = batch
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let n = batch_no * SEED_BATCH + i;
                format!(
                    "('{id}', '{tenant}', 'p{n}@example.com', 'P{n}', '{{}}', 'active', 'direct', \
                     {now}, {now})"
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO partners (id, tenant_id, email, name, metadata, status, source,
                 created_at, updated_at) VALUES {}",
            rows.join(",")
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        let rows: Vec<String> = batch
            .iter()
            .map(|id| {
                format!(
                    "('{tenant}', '{id}', 'acct_{}', 'ready', '[]', {now}, {now})",
                    &id[4..]
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO payout_accounts (tenant_id, partner_id, stripe_account_id, status,
                 currently_due, created_at, updated_at) VALUES {}",
            rows.join(",")
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let per_statement = SEED_BATCH / COMMISSIONS_EACH;
    for batch in partners.chunks(per_statement) {
        let mut tx = db.write(tenant).await.unwrap();
        let (mut conversions, mut commissions) = (Vec::new(), Vec::new());
        for partner in batch {
            for _ in 0..COMMISSIONS_EACH {
                let (conversion, commission) = (ids::new("cnv"), ids::new("com"));
                let order = &conversion[4..];
                conversions.push(format!(
                    "('{conversion}', '{tenant}', 'e{order}', 'purchase', 'o{order}', {now}, \
                     10000, 'EUR', 'h', '{{}}', {now})"
                ));
                commissions.push(format!(
                    "('{commission}', '{tenant}', '{partner}', '{campaign}', '{conversion}', \
                     'clk', 'e{order}', 'o{order}', 'txn{order}', 1000, 0, 'EUR', 'approved', \
                     {now}, {now}, {now}, {now})"
                ));
            }
        }
        sqlx::query(&format!(
            "INSERT INTO conversions (id, tenant_id, event_id, event_type, order_id, occurred_at,
                 amount, currency, body_hash, result, created_at) VALUES {}",
            conversions.join(",")
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(&format!(
            "INSERT INTO commissions (id, tenant_id, partner_id, campaign_id, conversion_id,
                 click_id, event_id, order_id, transaction_id, amount, reversed_amount, currency,
                 status, matures_at, approved_at, created_at, updated_at) VALUES {}",
            commissions.join(",")
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn paid(db: &Db) -> i64 {
    let (paid,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payouts WHERE status = 'paid'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    paid
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engines = engines("payouts", dir.path()).await;
    for (name, url, cleanup) in engines {
        let open = Arc::new(AtomicBool::new(false));
        let (stripe, log) = fake_stripe(open.clone()).await;
        let rate = RATE_LIMIT.to_string();
        let running = start(
            &url,
            &[
                "--stripe-api-base",
                &stripe,
                "--stripe-rate-limit",
                &rate,
                "--stripe-secret-key",
                "sk_test_bench_platform",
                "--payout-schedule",
                "off",
            ],
        )
        .await;
        let first = running.first_start.as_ref().unwrap();
        let (key, tenant) = (first.key.plaintext.clone(), first.tenant.id.clone());
        let base = format!("http://{}", running.addr);
        let client = reqwest::Client::new();
        let campaign: Value = client
            .post(format!("{base}/v1/campaigns"))
            .bearer_auth(&key)
            .json(
                &json!({"name": "Bench", "destination_url": "https://shop.example.com/",
                          "commission": {"type": "percent", "bps": 1000}}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let db = Db::connect(&url, 4).await.unwrap();
        seed(&db, &tenant, campaign["id"].as_str().unwrap()).await;

        // The reference: every commission row written once, in one statement.
        let started = Instant::now();
        let mut tx = db.write(&tenant).await.unwrap();
        let touched = sqlx::query(
            "UPDATE commissions SET updated_at = updated_at
             WHERE tenant_id = $1 AND status = 'approved' AND payout_id IS NULL",
        )
        .bind(&tenant)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        tx.commit().await.unwrap();
        let reference = started.elapsed();
        assert_eq!(touched as usize, PARTNERS * COMMISSIONS_EACH);

        let started = Instant::now();
        let run: Value = client
            .post(format!("{base}/v1/payouts/run"))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let built = started.elapsed();
        assert_eq!(
            run["payouts"].as_array().unwrap().len(),
            PARTNERS,
            "{}",
            run["carried"]
        );

        let released = Instant::now();
        open.store(true, Ordering::Relaxed);
        while (paid(&db).await as usize) < PARTNERS {
            assert!(
                released.elapsed() < Duration::from_secs(600),
                "transfers stalled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let requests = log.lock().unwrap().clone();
        let transfers: Vec<Instant> = requests
            .iter()
            .filter(|(_, t)| *t)
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(transfers.len(), PARTNERS, "one transfer per payout");
        let first_at = requests.iter().map(|(at, _)| *at).min().unwrap();
        let last_at = requests.iter().map(|(at, _)| *at).max().unwrap();
        let span = (last_at - first_at).as_secs_f64();
        let mut times: Vec<Instant> = requests.iter().map(|(at, _)| *at).collect();
        times.sort();
        // The busiest second: the most requests within any one-second window.
        let mut busiest = 0;
        let mut start_at = 0;
        for (end, at) in times.iter().enumerate() {
            while *at - times[start_at] >= Duration::from_secs(1) {
                start_at += 1;
            }
            busiest = busiest.max(end - start_at + 1);
        }
        println!(
            "{name}: run of {PARTNERS} partners x {COMMISSIONS_EACH} commissions built in {:.2} s \
             (reference: one UPDATE of the {} commissions {:.2} s, {:.1}x)",
            built.as_secs_f64(),
            touched,
            reference.as_secs_f64(),
            built.as_secs_f64() / reference.as_secs_f64(),
        );
        println!(
            "{name}: {} transfers in {span:.1} s: {:.0} transfers/s, {:.0} requests/s beside the \
             limit of {RATE_LIMIT}/s ({:.0}%); busiest second {busiest} requests",
            transfers.len(),
            transfers.len() as f64 / span,
            requests.len() as f64 / span,
            100.0 * requests.len() as f64 / span / f64::from(RATE_LIMIT),
        );
        db.close().await;
        running.shutdown().await.unwrap();
        if let Some((server, database)) = cleanup {
            admin(&server, &format!("DROP DATABASE {database} WITH (FORCE)")).await;
        }
    }
}
